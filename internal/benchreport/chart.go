package benchreport

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"slices"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Chart is a latency-distribution chart: one line per series over the percentiles they share.
type Chart struct {
	Title  string
	Series []Series
}

// Series is one named latency distribution.
type Series struct {
	Name   string
	Points []Point
}

// ChartFromRows collects the latency distributions of rows (those with Latency set). A
// series is named after the part of the row's name behind its last ": " (the row
// "latency at 1000 req/s: haproxy" is the series "haproxy").
func ChartFromRows(title string, rows []Row) Chart {
	c := Chart{Title: title}
	for _, r := range rows {
		if len(r.Latency) > 0 {
			name := r.Name
			if i := strings.LastIndex(name, ": "); i >= 0 {
				name = name[i+2:]
			}
			c.Series = append(c.Series, Series{Name: name, Points: r.Latency})
		}
	}
	return c
}

var palette = []color.RGBA{
	{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff},
	{0xff, 0x7f, 0x0e, 0xff}, {0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff},
}

// Image draws the chart: percentiles on the x axis (evenly spaced), milliseconds on the y axis.
func (c Chart) Image() (*image.RGBA, error) {
	var pcts []float64
	maxMs := 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			if !slices.Contains(pcts, p.Percentile) {
				pcts = append(pcts, p.Percentile)
			}
			maxMs = max(maxMs, p.Millis)
		}
	}
	if len(pcts) < 2 || maxMs <= 0 {
		return nil, fmt.Errorf("chart %q: need at least two percentiles and a positive latency", c.Title)
	}
	slices.Sort(pcts)
	const W, H, left, right, top, bottom = 960, 520, 70, 260, 40, 50
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	grey := color.RGBA{0xcc, 0xcc, 0xcc, 0xff}
	black := color.RGBA{0, 0, 0, 0xff}
	plotW, plotH := W-left-right, H-top-bottom
	x := func(i int) int { return left + i*plotW/(len(pcts)-1) }
	y := func(ms float64) int { return top + plotH - int(ms/(maxMs*1.1)*float64(plotH)) }
	// grid and axes
	for k := 0; k <= 5; k++ {
		ms := maxMs * 1.1 * float64(k) / 5
		line(img, left, y(ms), left+plotW, y(ms), grey)
		text(img, 5, y(ms)+4, fmt.Sprintf("%.3g ms", ms), black)
	}
	for i, p := range pcts {
		line(img, x(i), top, x(i), top+plotH, grey)
		text(img, x(i)-12, top+plotH+18, fmt.Sprintf("p%g", p), black)
	}
	line(img, left, top, left, top+plotH, black)
	line(img, left, top+plotH, left+plotW, top+plotH, black)
	text(img, left, 22, c.Title, black)
	text(img, left+plotW/2-40, H-10, "percentile", black)
	for si, s := range c.Series {
		col := palette[si%len(palette)]
		pts := slices.Clone(s.Points)
		slices.SortFunc(pts, func(a, b Point) int {
			switch {
			case a.Percentile < b.Percentile:
				return -1
			case a.Percentile > b.Percentile:
				return 1
			}
			return 0
		})
		for i := range pts {
			xi := x(slices.Index(pcts, pts[i].Percentile))
			dot(img, xi, y(pts[i].Millis), col)
			if i > 0 {
				xp := x(slices.Index(pcts, pts[i-1].Percentile))
				thick(img, xp, y(pts[i-1].Millis), xi, y(pts[i].Millis), col)
			}
		}
		ly := top + 20 + si*22
		thick(img, W-right+15, ly-4, W-right+40, ly-4, col)
		text(img, W-right+46, ly, s.Name, black)
	}
	return img, nil
}

// WritePNG draws the chart into path.
func (c Chart) WritePNG(path string) error {
	img, err := c.Image()
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("chart %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("chart %s: %w", path, err)
	}
	return nil
}

func text(img *image.RGBA, x, y int, s string, c color.Color) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func line(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	dx, dy := x1-x0, y1-y0
	n := max(abs(float64(dx)), abs(float64(dy)))
	if n == 0 {
		img.Set(x0, y0, c)
		return
	}
	for i := 0; i <= int(n); i++ {
		img.Set(x0+int(float64(dx)*float64(i)/n), y0+int(float64(dy)*float64(i)/n), c)
	}
}

func thick(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	for o := -1; o <= 1; o++ {
		line(img, x0, y0+o, x1, y1+o, c)
	}
}

func dot(img *image.RGBA, x, y int, c color.Color) {
	for dx := -3; dx <= 3; dx++ {
		for dy := -3; dy <= 3; dy++ {
			if dx*dx+dy*dy <= 9 {
				img.Set(x+dx, y+dy, c)
			}
		}
	}
}
