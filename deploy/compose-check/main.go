// compose-check: validates compose files the way Docker Compose loads them (compose-go:
// compose-spec JSON schema, interpolation, env_file merging, several files merged like
// `docker compose -f a -f b`) and prints the resolved services. Needs only Go and the module
// proxy, no Docker:
//
//	cd deploy/compose-check && go run . ../docker-compose.yml ../../kafdrop/docker-compose.yml
//	go run . -json /tmp/out ../docker-compose.yml,../compose.secure.yml
//
// Each argument is one project; an argument of several files separated by commas is loaded as
// one project, the files merged in that order. With -json DIR, each project's resolved model
// (after merging and interpolation) is also written to DIR/project-N.json, N from 1, for checks
// that need the merged result.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	jsonDir := flag.String("json", "", "write each project's resolved model as JSON into this directory")
	flag.Parse()
	for i, arg := range flag.Args() {
		files := strings.Split(arg, ",")
		opts, err := cli.NewProjectOptions(files, cli.WithOsEnv, cli.WithDotEnv)
		if err != nil {
			fmt.Println("options:", err)
			os.Exit(1)
		}
		p, err := opts.LoadProject(context.Background())
		if err != nil {
			fmt.Println(arg, "INVALID:", err)
			os.Exit(1)
		}
		for _, s := range p.Services {
			fmt.Printf("%s: service %s image=%s env=%d ports=%v\n", arg, s.Name, s.Image, len(s.Environment), s.Ports)
			for k, v := range s.Environment {
				if v != nil {
					fmt.Printf("    %s=%s\n", k, *v)
				}
			}
		}
		if *jsonDir != "" {
			out, err := p.MarshalJSON()
			if err != nil {
				fmt.Println(arg, "cannot render as JSON:", err)
				os.Exit(1)
			}
			path := filepath.Join(*jsonDir, fmt.Sprintf("project-%d.json", i+1))
			if err := os.WriteFile(path, out, 0o600); err != nil {
				fmt.Println("writing", path, ":", err)
				os.Exit(1)
			}
		}
	}
}
