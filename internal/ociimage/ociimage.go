// Package ociimage writes a container image as one tar file without a
// container engine: a single layer (the files given, plus the /etc/passwd
// and /etc/group of a non-root user), its config and manifest, laid out
// both as an OCI image layout (index.json, blobs/sha256/...) and with the
// manifest.json that `docker load` reads, as Docker itself writes them.
// `docker load` and `ctr -n k8s.io images import` both take the result.
// The output is reproducible: the same inputs give the same bytes.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// File is one file of the image's layer.
type File struct {
	Path string // absolute, e.g. /scc
	Mode int64  // permission bits, e.g. 0o755
	Data []byte
}

// Options describe the image.
type Options struct {
	// Name and Tag name the image (e.g. "scc", "0.1.0"); Name may carry a
	// registry and path ("ghcr.io/org/scc").
	Name, Tag string
	// Files go into the layer (owned by root, readable by everyone).
	Files []File
	// Entrypoint and Cmd of the config.
	Entrypoint, Cmd []string
	// Env entries, "KEY=value".
	Env []string
	// UID and GID the container runs as, with the user's name. Default
	// 65532 ("nonroot"); 0 is refused: the image never runs as root.
	UID, GID int
	User     string
	// OS and Architecture of the binaries (default linux, amd64).
	OS, Architecture string
	// Created stamps the config and every file; default the Unix epoch,
	// for reproducible output.
	Created time.Time
	// Labels go into the config.
	Labels map[string]string
}

// Result tells what was written.
type Result struct {
	Ref            string // name:tag
	ManifestDigest string // sha256:...
	ConfigDigest   string
	LayerDigest    string
	Size           int64 // of the tar written
}

// The reference grammar of the distribution spec, in short: an optional
// registry host (with a port), lowercase path components, and a tag.
var (
	nameRE = regexp.MustCompile(`^([a-zA-Z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

const (
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
)

// Write writes the image tar to w.
func Write(w io.Writer, o Options) (*Result, error) {
	if o.Name == "" || o.Tag == "" {
		return nil, errors.New("ociimage: a name and a tag are required")
	}
	if !tagRE.MatchString(o.Tag) || !nameRE.MatchString(o.Name) {
		return nil, fmt.Errorf("ociimage: %q:%q is not a valid image name and tag", o.Name, o.Tag)
	}
	if o.UID == 0 && o.GID == 0 && o.User == "" {
		o.UID, o.GID, o.User = 65532, 65532, "nonroot"
	}
	if o.UID == 0 {
		return nil, errors.New("ociimage: the image must not run as root (UID 0)")
	}
	if o.User == "" {
		o.User = "app"
	}
	if o.OS == "" {
		o.OS = "linux"
	}
	if o.Architecture == "" {
		o.Architecture = "amd64"
	}
	created := o.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()

	layer, err := buildLayer(o, created)
	if err != nil {
		return nil, err
	}
	layerDigest := digest(layer)

	cfg := map[string]any{
		"created":      created.Format(time.RFC3339),
		"architecture": o.Architecture,
		"os":           o.OS,
		"config": map[string]any{
			"User":       strconv.Itoa(o.UID) + ":" + strconv.Itoa(o.GID),
			"Entrypoint": o.Entrypoint,
			"Cmd":        o.Cmd,
			"Env":        o.Env,
			"WorkingDir": "/",
			"Labels":     o.Labels,
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history": []map[string]any{{"created": created.Format(time.RFC3339), "created_by": "ociimage (github.com/scc-k8s/scc)"}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgDigest := digest(cfgJSON)

	ref := o.Name + ":" + o.Tag
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: cfgDigest, Size: int64(len(cfgJSON))},
		"layers":        []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: int64(len(layer))}},
	}
	manJSON, err := json.Marshal(manifest)
	if err != nil {
		return nil, err
	}
	manDigest := digest(manJSON)

	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaIndex,
		"manifests": []descriptor{{
			MediaType: mediaManifest, Digest: manDigest, Size: int64(len(manJSON)),
			Annotations: map[string]string{
				"io.containerd.image.name":          fullRef(ref),
				"org.opencontainers.image.ref.name": o.Tag,
			},
			Platform: &platform{Architecture: o.Architecture, OS: o.OS},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return nil, err
	}
	dockerManifest, err := json.Marshal([]map[string]any{{
		"Config":   blobPath(cfgDigest),
		"RepoTags": []string{ref},
		"Layers":   []string{blobPath(layerDigest)},
	}})
	if err != nil {
		return nil, err
	}

	cw := &countingWriter{w: w}
	tw := tar.NewWriter(cw)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", indexJSON},
		{"manifest.json", dockerManifest},
		{blobPath(cfgDigest), cfgJSON},
		{blobPath(layerDigest), layer},
		{blobPath(manDigest), manJSON},
	}
	if err := writeDir(tw, "blobs/", created); err != nil {
		return nil, err
	}
	if err := writeDir(tw, "blobs/sha256/", created); err != nil {
		return nil, err
	}
	for _, e := range entries {
		if err := writeFile(tw, e.name, 0o644, e.data, created); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &Result{Ref: ref, ManifestDigest: manDigest, ConfigDigest: cfgDigest, LayerDigest: layerDigest, Size: cw.n}, nil
}

// buildLayer is the layer tar: the files, their folders, and the user.
func buildLayer(o Options, created time.Time) ([]byte, error) {
	files := slices.Clone(o.Files)
	files = append(files,
		File{Path: "/etc/passwd", Mode: 0o644, Data: []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/home/%s:/sbin/nologin\n", o.User, o.UID, o.GID, o.User, o.User))},
		File{Path: "/etc/group", Mode: 0o644, Data: []byte(fmt.Sprintf("root:x:0:\n%s:x:%d:\n", o.User, o.GID))},
	)
	dirs := map[string]bool{"tmp/": true, "home/": true, "home/" + o.User + "/": true}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("ociimage: file path %q must be absolute and clean", f.Path)
		}
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			dirs[strings.TrimPrefix(d, "/")+"/"] = true
		}
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	names := make([]string, 0, len(dirs))
	for d := range dirs {
		names = append(names, d)
	}
	slices.Sort(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range names {
		h := &tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: created, Format: tar.FormatPAX}
		switch d {
		case "tmp/":
			h.Mode = 0o1777
		case "home/" + o.User + "/":
			h.Mode, h.Uid, h.Gid = 0o700, o.UID, o.GID
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := writeFile(tw, strings.TrimPrefix(f.Path, "/"), f.Mode, f.Data, created); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeDir(tw *tar.Writer, name string, t time.Time) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: t, Format: tar.FormatPAX})
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte, t time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: t, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(d string) string { return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:") }

// fullRef is the name containerd stores: a bare name gets docker.io/library/.
func fullRef(ref string) string {
	name := ref[:strings.LastIndex(ref, ":")]
	first, _, hasSlash := strings.Cut(name, "/")
	switch {
	case !hasSlash:
		return "docker.io/library/" + ref
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		return "docker.io/" + ref
	}
	return ref
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
