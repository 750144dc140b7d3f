package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// errFigures is returned when some figures could not be measured; the
// report is still written, with the reason in their place.
var errFigures = errors.New("some figures could not be measured")

// run is the whole program: parse flags, measure, write the outputs. It
// returns the report (also on errFigures) so that a test can check it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (*report, error) {
	o, err := parseOptions(args, stderr)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	s, err := newSuite(ctx, o, stderr)
	if err != nil {
		return nil, err
	}
	runErr := s.runAll(ctx)
	s.close()
	if runErr != nil {
		return nil, runErr
	}
	rep := s.buildReport(time.Since(start))
	if err := writeOutputs(o, rep, stdout); err != nil {
		return rep, err
	}
	if f := rep.failures(); len(f) > 0 {
		return rep, fmt.Errorf("%w:\n  %s", errFigures, strings.Join(f, "\n  "))
	}
	return rep, nil
}

// writeOutputs writes the markdown (to -out, or stdout), the chart and
// the raw medians.
func writeOutputs(o options, rep *report, stdout io.Writer) error {
	chartRel := ""
	if o.png != "" && len(rep.charts) > 0 {
		if err := writeFile(o.png, func(w io.Writer) error { return writePNG(w, rep.charts) }); err != nil {
			return err
		}
		chartRel = relativeTo(o.out, o.png)
	}
	if o.json != "" {
		if err := writeFile(o.json, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(rep.medians)
		}); err != nil {
			return err
		}
	}
	md := func(w io.Writer) error { return writeMarkdown(w, rep, o.reps, chartRel) }
	if o.out == "" {
		return md(stdout)
	}
	if err := writeFile(o.out, md); err != nil {
		return err
	}
	var b strings.Builder
	writeHeadlines(&b, rep.headlines)
	b.WriteString("wrote " + o.out)
	if chartRel != "" {
		b.WriteString(" and " + o.png)
	}
	_, err := fmt.Fprintln(stdout, b.String())
	return err
}

// relativeTo is target's path as seen from the directory of file (the
// markdown's link to the chart).
func relativeTo(file, target string) string {
	if file == "" {
		return target
	}
	from, err1 := filepath.Abs(filepath.Dir(file))
	to, err2 := filepath.Abs(target)
	if err1 != nil || err2 != nil {
		return target
	}
	rel, err := filepath.Rel(from, to)
	if err != nil {
		return target
	}
	return filepath.ToSlash(rel)
}

// writeFile writes a file through a temporary one in the same directory,
// creating the directory if needed.
func writeFile(path string, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".bench-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
