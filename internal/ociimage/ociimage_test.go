package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

func readTar(t *testing.T, b []byte) map[string]*tarEntry {
	t.Helper()
	out := map[string]*tarEntry{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		out[h.Name] = &tarEntry{h: h, data: data}
	}
}

type tarEntry struct {
	h    *tar.Header
	data []byte
}

func sha(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }

// The tar holds a consistent OCI layout and Docker's manifest.json: every
// digest names the bytes it points at, the config runs a non-root user,
// and the layer holds the files with their modes.
func TestImageLayout(t *testing.T) {
	var buf bytes.Buffer
	res, err := Write(&buf, Options{Name: "scc", Tag: "test", Entrypoint: []string{"/scc"},
		Files: []File{{Path: "/scc", Mode: 0o755, Data: []byte("#!binary")}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != int64(buf.Len()) || res.Ref != "scc:test" {
		t.Fatalf("result %+v, wrote %d bytes", res, buf.Len())
	}
	files := readTar(t, buf.Bytes())
	blob := func(d string) []byte {
		e := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if e == nil {
			t.Fatalf("no blob %s", d)
		}
		if got := sha(e.data); got != d {
			t.Fatalf("blob %s holds bytes of digest %s", d, got)
		}
		return e.data
	}
	if files["oci-layout"] == nil {
		t.Fatal("no oci-layout")
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"].data, &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"].data)
	}
	if index.Manifests[0].Annotations["io.containerd.image.name"] != "docker.io/library/scc:test" {
		t.Errorf("containerd name %v", index.Manifests[0].Annotations)
	}
	var manifest struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(blob(index.Manifests[0].Digest), &manifest); err != nil {
		t.Fatal(err)
	}
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(files["manifest.json"].data, &docker); err != nil || len(docker) != 1 {
		t.Fatalf("manifest.json: %v", err)
	}
	if docker[0].RepoTags[0] != "scc:test" || docker[0].Config != "blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:") ||
		docker[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:") {
		t.Fatalf("manifest.json %+v does not match the OCI manifest %+v", docker, manifest)
	}
	var cfg struct {
		Config struct {
			User       string
			Entrypoint []string
		} `json:"config"`
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/scc" {
		t.Errorf("config %+v", cfg.Config)
	}
	layer := blob(manifest.Layers[0].Digest)
	if cfg.RootFS.DiffIDs[0] != manifest.Layers[0].Digest { // uncompressed: the same
		t.Errorf("diff_id %s, layer %s", cfg.RootFS.DiffIDs[0], manifest.Layers[0].Digest)
	}
	inLayer := readTar(t, layer)
	if e := inLayer["scc"]; e == nil || e.h.Mode != 0o755 || string(e.data) != "#!binary" || e.h.Uid != 0 {
		t.Errorf("scc in the layer: %+v", e)
	}
	if e := inLayer["etc/passwd"]; e == nil || !strings.Contains(string(e.data), "nonroot:x:65532:65532:") {
		t.Errorf("passwd: %+v", e)
	}
	if e := inLayer["tmp/"]; e == nil || e.h.Mode != 0o1777 {
		t.Errorf("tmp: %+v", e)
	}
}

func TestReproducibleAndRefused(t *testing.T) {
	o := Options{Name: "ghcr.io/example/scc", Tag: "1.2.3", Files: []File{{Path: "/b/x", Mode: 0o644, Data: []byte("x")}, {Path: "/a", Mode: 0o755}}}
	var a, b bytes.Buffer
	ra, err := Write(&a, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Write(&b, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same inputs wrote different bytes")
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	_ = json.Unmarshal(readTar(t, a.Bytes())["index.json"].data, &index)
	if index.Manifests[0].Annotations["io.containerd.image.name"] != "ghcr.io/example/scc:1.2.3" || ra.Ref != "ghcr.io/example/scc:1.2.3" {
		t.Errorf("name %v", index.Manifests[0].Annotations)
	}
	for _, bad := range []Options{
		{Name: "scc", Tag: "x", UID: 0, GID: 5, User: "root"},
		{Name: "SCC", Tag: "x"},
		{Name: "scc", Tag: "a:b"},
		{Name: "scc", Tag: "x", Files: []File{{Path: "relative"}}},
		{Name: "scc", Tag: "x", Files: []File{{Path: "/a/../b"}}},
	} {
		if _, err := Write(io.Discard, bad); err == nil {
			t.Errorf("%+v was accepted", bad)
		}
	}
}
