package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// pyclientSource is bench/pyclient.py, written next to the run's other
// temporary files so the benchmark works from any directory.
//
//go:embed pyclient.py
var pyclientSource []byte

// pyTimeout bounds one python run.
const pyTimeout = 5 * time.Minute

// pyClient runs pyclient.py with one interpreter.
type pyClient struct {
	python string
	script string
}

// newPyClient writes the script into dir.
func newPyClient(python, dir string) (*pyClient, error) {
	script := filepath.Join(dir, "pyclient.py")
	if err := os.WriteFile(script, pyclientSource, 0o644); err != nil {
		return nil, fmt.Errorf("write pyclient.py: %w", err)
	}
	return &pyClient{python: python, script: script}, nil
}

// pyRun is one python run: threads sessions posting hooks JSON bodies of
// bodyBytes to url, through proxy unless it is empty.
type pyRun struct {
	proxy     string
	url       string
	threads   int
	hooks     int
	bodyBytes int
	expect    int
}

// pyOutput is what pyclient.py prints.
type pyOutput struct {
	LatenciesMS []float64 `json:"latencies_ms"`
	ElapsedS    float64   `json:"elapsed_s"`
	OK          int       `json:"ok"`
	Errors      int       `json:"errors"`
	FirstError  string    `json:"first_error"`
}

// run runs pyclient.py and returns the timed latencies, and the number of
// expected answers including the warm-up.
func (p *pyClient) run(ctx context.Context, r pyRun) (loadResult, error) {
	ctx, cancel := context.WithTimeout(ctx, pyTimeout)
	defer cancel()
	args := []string{p.script, "--url", r.url, "--threads", strconv.Itoa(r.threads),
		"--hooks", strconv.Itoa(r.hooks), "--body-bytes", strconv.Itoa(r.bodyBytes),
		"--expect", strconv.Itoa(r.expect)}
	if r.proxy != "" {
		args = append(args, "--proxy", r.proxy)
	}
	out, err := p.output(ctx, args...)
	if err != nil {
		return loadResult{}, err
	}
	var res pyOutput
	if err := json.Unmarshal(out, &res); err != nil {
		return loadResult{}, fmt.Errorf("parse pyclient output: %w", err)
	}
	if res.Errors > 0 {
		return loadResult{}, fmt.Errorf("pyclient: %d of %d requests failed, first: %s: %w",
			res.Errors, res.Errors+res.OK, res.FirstError, errStatus)
	}
	lr := loadResult{elapsed: time.Duration(res.ElapsedS * float64(time.Second)), total: int64(res.OK)}
	for _, ms := range res.LatenciesMS {
		lr.lat = append(lr.lat, time.Duration(ms*float64(time.Millisecond)))
	}
	slices.Sort(lr.lat)
	return lr, nil
}

// versions reports the interpreter's and requests' versions.
func (p *pyClient) versions(ctx context.Context) (python, requests string, err error) {
	out, err := p.output(ctx, p.script, "--versions")
	if err != nil {
		return "", "", err
	}
	var v struct{ Python, Requests string }
	if err := json.Unmarshal(out, &v); err != nil {
		return "", "", fmt.Errorf("parse pyclient versions: %w", err)
	}
	return v.Python, v.Requests, nil
}

func (p *pyClient) output(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.python, args...)
	// No HTTP_PROXY or the like from the benchmark's environment.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"}
	dieWithParent(cmd)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s pyclient.py: %w: %s", p.python, err, stderr.String())
	}
	return out, nil
}
