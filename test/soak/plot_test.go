package soak

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// plot draws the samples as an SVG: one panel per resource, one line per
// component.
func plot(comps []*series, d time.Duration) []byte {
	const w, ph, left, top, gap = 860, 180, 60, 40, 50
	colors := []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"}
	panels := []struct {
		title string
		get   func(*series) []float64
	}{
		{"heap in use (MiB)", func(s *series) []float64 { return s.heapMiB }},
		{"goroutines", func(s *series) []float64 { return s.gor }},
		{"open files", func(s *series) []float64 { return s.openFDs }},
	}
	height := top + len(panels)*(ph+gap) + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="14">scc soak: %v of churn, every component sampled every 2 s (go test ./test/soak)</text>`+"\n", left, d)
	pw := w - left - 150
	for pi, p := range panels {
		y0 := top + pi*(ph+gap)
		maxV := 1.0
		for _, s := range comps {
			if v := p.get(s); len(v) > 0 {
				maxV = max(maxV, slices.Max(v))
			}
		}
		maxV *= 1.1
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", left, y0-6, p.title)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", left, y0, pw, ph)
		for k := 0; k <= 4; k++ {
			v := maxV * float64(k) / 4
			y := float64(y0+ph) - float64(ph)*float64(k)/4
			fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f</text>`+"\n", left-4, y+4, v)
		}
		for ci, s := range comps {
			v := p.get(s)
			var pts []string
			for i := range v {
				x := float64(left) + float64(pw)*s.at[i]/d.Seconds()
				y := float64(y0+ph) - float64(ph)*v[i]/maxV
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", colors[ci%len(colors)], strings.Join(pts, " "))
			if pi == 0 {
				fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">%s</text>`+"\n", left+pw+12, y0+14+16*ci, colors[ci%len(colors)], s.name)
			}
		}
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d">seconds: 0 to %.0f</text>`+"\n", left, height-10, d.Seconds())
	b.WriteString("</svg>\n")
	return []byte(b.String())
}
