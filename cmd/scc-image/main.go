// Command scc-image writes the scc container image as a tar file without a
// container engine: the static scc binary (or, with -binary and -path, any
// static binary), run as a non-root user. Load it
// with `docker load -i scc-image.tar` or
// `ctr -n k8s.io images import scc-image.tar`.
//
//	go run ./cmd/scc-image -o scc-image.tar -name scc -tag dev
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/scc-k8s/scc/internal/ociimage"
)

func main() {
	out := flag.String("o", "scc-image.tar", "image tar to write")
	name := flag.String("name", "scc", "image name (may carry a registry: ghcr.io/org/scc)")
	tag := flag.String("tag", "dev", "image tag")
	arch := flag.String("arch", runtime.GOARCH, "CPU architecture to build for")
	binary := flag.String("binary", "", "a static linux binary to use instead of building scc")
	path := flag.String("path", "/scc", "where the binary goes in the image; it is the entrypoint")
	flag.Parse()
	if err := run(*out, *name, *tag, *arch, *binary, *path); err != nil {
		fmt.Fprintln(os.Stderr, "scc-image:", err)
		os.Exit(1)
	}
}

func run(out, name, tag, arch, binary, path string) error {
	if binary == "" {
		dir, err := os.MkdirTemp("", "scc-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "scc")
		fmt.Fprintf(os.Stderr, "building a static scc for linux/%s ...\n", arch)
		start := time.Now()
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", binary, "github.com/scc-k8s/scc/cmd/scc")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build: %w", err)
		}
		fmt.Fprintf(os.Stderr, "built in %v\n", time.Since(start).Round(100*time.Millisecond))
	}
	bin, err := os.ReadFile(binary)
	if err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	res, err := ociimage.Write(f, ociimage.Options{
		Name: name, Tag: tag, Architecture: arch,
		Files:      []ociimage.File{{Path: path, Mode: 0o755, Data: bin}},
		Entrypoint: []string{path},
		Labels: map[string]string{
			"org.opencontainers.image.title":  filepath.Base(path),
			"org.opencontainers.image.source": "https://github.com/scc-k8s/scc",
		},
	})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s (%s, %.1f MiB)\nload it with: docker load -i %s   or   ctr -n k8s.io images import %s\n",
		out, res.Ref, res.ManifestDigest, float64(res.Size)/(1<<20), out, out)
	return nil
}
