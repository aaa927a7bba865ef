// compose-check: validates compose files the way Docker Compose loads them (compose-go:
// compose-spec JSON schema, interpolation, env_file merging) and prints the resolved services.
// Needs only Go and the module proxy, no Docker:
//
//	cd deploy/compose-check && go run . ../docker-compose.yml ../../kafdrop/docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	for _, f := range os.Args[1:] {
		opts, err := cli.NewProjectOptions([]string{f}, cli.WithOsEnv, cli.WithDotEnv)
		if err != nil {
			fmt.Println("options:", err)
			os.Exit(1)
		}
		p, err := opts.LoadProject(context.Background())
		if err != nil {
			fmt.Println(f, "INVALID:", err)
			os.Exit(1)
		}
		for _, s := range p.Services {
			fmt.Printf("%s: service %s image=%s env=%d ports=%v\n", f, s.Name, s.Image, len(s.Environment), s.Ports)
			for k, v := range s.Environment {
				if v != nil {
					fmt.Printf("    %s=%s\n", k, *v)
				}
			}
		}
	}
}
