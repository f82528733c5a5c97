// Package demo serves the chat page that `scc dev` shows at /. The page's
// script is self-contained (it speaks the SocketCluster protocol itself)
// and embedded in the binary, so it works with no network.
package demo

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the demo page and its assets.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServer(http.FS(sub))
}
