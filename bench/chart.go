package main

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strconv"
)

// chartPanel is one panel of the latency chart: series over the
// concurrencies.
type chartPanel struct {
	title  string
	xs     []int
	series []chartSeries
}

// chartSeries is one line: a value (or a missing one) per concurrency.
type chartSeries struct {
	name   string
	color  color.RGBA
	hollow bool // p99: hollow markers and a dashed line
	ys     []cell
}

var (
	blue      = color.RGBA{0x1f, 0x5f, 0xbf, 0xff}
	lightBlue = color.RGBA{0x6f, 0xa8, 0xef, 0xff}
	orange    = color.RGBA{0xd9, 0x6a, 0x0b, 0xff}
	lightOrg  = color.RGBA{0xf2, 0xa6, 0x5a, 0xff}
	ink       = color.RGBA{0x20, 0x20, 0x20, 0xff}
	gridMajor = color.RGBA{0xc8, 0xc8, 0xc8, 0xff}
	gridMinor = color.RGBA{0xea, 0xea, 0xea, 0xff}
)

// chartPanels are scenario a's p50 and p99 of hookproxy and the no-op
// proxy, one panel per body size.
func (s *suite) chartPanels() []chartPanel {
	var out []chartPanel
	for _, size := range s.o.sizes {
		p := chartPanel{title: sizeName(size) + " bodies", xs: s.o.concurrency}
		for _, sr := range []struct {
			name, sys, m string
			c            color.RGBA
			hollow       bool
		}{
			{"hookproxy p50", "hp", "p50", blue, false},
			{"hookproxy p99", "hp", "p99", lightBlue, true},
			{"no-op p50", "noop", "p50", orange, false},
			{"no-op p99", "noop", "p99", lightOrg, true},
		} {
			cs := chartSeries{name: sr.name, color: sr.c, hollow: sr.hollow}
			for _, c := range s.o.concurrency {
				cs.ys = append(cs.ys, s.rec.get(fmt.Sprintf("a/%s/s%d/c%d/%s", sr.sys, size, c, sr.m)))
			}
			p.series = append(p.series, cs)
		}
		out = append(out, p)
	}
	return out
}

// Chart geometry, in pixels.
const (
	panelW   = 600
	chartH   = 540
	plotTop  = 120
	plotBot  = 460
	plotLeft = 90
	plotPad  = 30 // right margin of a panel
	font     = 2  // text scale
)

// writePNG draws the panels side by side and encodes them as PNG.
func writePNG(w io.Writer, panels []chartPanel) error {
	if len(panels) == 0 {
		return errors.New("chart: no data")
	}
	img := image.NewRGBA(image.Rect(0, 0, panelW*len(panels), chartH))
	fillRect(img, 0, 0, img.Bounds().Dx(), chartH, color.White)
	drawText(img, 20, 16, "Latency vs concurrency (ms, log scale), Go load generator, closed loop", font, ink)
	drawLegend(img, 20, 48, panels[0].series)
	// One scale for every panel, so that they compare at a glance.
	lo, hi, ok := logRange(panels)
	for i, p := range panels {
		drawPanel(img, i*panelW, p, lo, hi, ok)
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("encode chart: %w", err)
	}
	return nil
}

func drawLegend(img *image.RGBA, x, y int, series []chartSeries) {
	for _, s := range series {
		drawMarker(img, x+6, y+7, s.color, s.hollow)
		drawText(img, x+18, y, s.name, font, ink)
		x += 18 + textWidth(s.name, font) + 30
	}
}

// logRange is the decade range (as powers of ten) that holds every value
// of the panels.
func logRange(panels []chartPanel) (lo, hi float64, ok bool) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, p := range panels {
		for _, s := range p.series {
			for _, y := range s.ys {
				if y.ok && y.v > 0 {
					lo, hi = math.Min(lo, y.v), math.Max(hi, y.v)
				}
			}
		}
	}
	if math.IsInf(lo, 1) {
		return 0, 0, false
	}
	lo, hi = math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi, true
}

func drawPanel(img *image.RGBA, x0 int, p chartPanel, lo, hi float64, ok bool) {
	left, right := x0+plotLeft, x0+panelW-plotPad
	drawText(img, left, plotTop-34, p.title, font, ink)
	if !ok {
		drawText(img, left, (plotTop+plotBot)/2, "no data", font, ink)
		return
	}
	yOf := func(v float64) int {
		f := (math.Log10(v) - lo) / (hi - lo)
		return plotBot - int(math.Round(f*float64(plotBot-plotTop)))
	}
	drawYGrid(img, left, right, lo, hi, yOf)
	xOf := func(i int) int { return left + (2*i+1)*(right-left)/(2*len(p.xs)) }
	for i, c := range p.xs {
		x := xOf(i)
		fillRect(img, x, plotBot, 1, 6, ink)
		label := strconv.Itoa(c)
		drawText(img, x-textWidth(label, font)/2, plotBot+12, label, font, ink)
	}
	axis := "concurrency"
	drawText(img, (left+right-textWidth(axis, font))/2, plotBot+40, axis, font, ink)
	fillRect(img, left, plotTop, 1, plotBot-plotTop+1, ink)
	fillRect(img, left, plotBot, right-left, 1, ink)
	for _, s := range p.series {
		drawSeries(img, s, xOf, yOf)
	}
}

// drawYGrid draws a line and a label at each decade and light lines at 2
// and 5 times it.
func drawYGrid(img *image.RGBA, left, right int, lo, hi float64, yOf func(float64) int) {
	for d := lo; d <= hi; d++ {
		base := math.Pow(10, d)
		if d < hi {
			for _, m := range []float64{2, 5} {
				fillRect(img, left, yOf(base*m), right-left, 1, gridMinor)
			}
		}
		y := yOf(base)
		fillRect(img, left, y, right-left, 1, gridMajor)
		label := strconv.FormatFloat(base, 'f', -1, 64)
		drawText(img, left-10-textWidth(label, font), y-7, label, font, ink)
	}
}

func drawSeries(img *image.RGBA, s chartSeries, xOf func(int) int, yOf func(float64) int) {
	prevX, prevY, have := 0, 0, false
	for i, y := range s.ys {
		if !y.ok || y.v <= 0 {
			have = false
			continue
		}
		x, py := xOf(i), yOf(y.v)
		if have {
			drawLine(img, prevX, prevY, x, py, s.color, s.hollow)
		}
		prevX, prevY, have = x, py, true
	}
	for i, y := range s.ys {
		if y.ok && y.v > 0 {
			drawMarker(img, xOf(i), yOf(y.v), s.color, s.hollow)
		}
	}
}

// drawLine draws a 3-pixel line, dashed when asked.
func drawLine(img *image.RGBA, x0, y0, x1, y1 int, c color.Color, dashed bool) {
	n := max(abs(x1-x0), abs(y1-y0), 1)
	for i := 0; i <= n; i++ {
		if dashed && (i/8)%2 == 1 {
			continue
		}
		x := x0 + (x1-x0)*i/n
		y := y0 + (y1-y0)*i/n
		fillRect(img, x-1, y-1, 3, 3, c)
	}
}

// drawMarker draws a 11-pixel square centred on (x, y), hollow or filled.
func drawMarker(img *image.RGBA, x, y int, c color.Color, hollow bool) {
	fillRect(img, x-5, y-5, 11, 11, c)
	if hollow {
		fillRect(img, x-3, y-3, 7, 7, color.White)
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
