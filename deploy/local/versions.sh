# The versions of the services the local stack installs, in one place: deploy/local/stack.sh
# (the stack itself) and deploy/podman/images.sh (the container images built from the same
# downloads) both source this file, so a bump changes both. Each can be overridden from the
# environment.
# shellcheck shell=bash disable=SC2034
KAFKA_VERSION="${ETL_KAFKA_VERSION:-4.1.1}"
LOG4J_VERSION="2.24.3"
FERRETDB_VERSION="${ETL_FERRETDB_VERSION:-v1.24.2}"
REGISTRY_VERSION="${ETL_REGISTRY_VERSION:-3.3.3}"
