package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/caarlos0/env/v11"

	"hookproxy/admin"
)

// Exit codes of the command line, for scripts.
const (
	exitOK       = 0
	exitFailure  = 1 // the command failed: admin API unreachable, refused or in error
	exitUsage    = 2 // wrong command, flag or argument
	exitNotFound = 3 // a dead letter named by its id was not found (the others were processed)
)

// exitError carries an exit code other than exitFailure.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitCode is the process exit code for run's error.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitFailure
}

func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// checkPaging refuses a --limit below 1 or an --offset below 0.
func checkPaging(limit, offset int) error {
	switch {
	case limit < 1:
		return usageErr("--limit %d: want 1 or more", limit)
	case offset < 0:
		return usageErr("--offset %d: want 0 or more", offset)
	}
	return nil
}

const cliUsage = `usage: hookproxy <command> [flags]

operator commands (they talk to a running hookproxy's admin API):
  status                      targets and totals
  dead list                   list dead letters (or dead ls)
  dead show ID                a dead letter with its hook bodies
  dead replay SELECTOR        send dead letters again: back into their target's queue, in order
  dead purge SELECTOR         delete dead letters
  retry-failed                replay every dead letter (= dead replay --all)
  health [--ready]            exit 0 when hookproxy is alive (--ready: ready, /readyz), 1 when not
  version                     print the version (also: hookproxy --version)

other commands:
  serve                       run the proxy and the sender (the default, also with no command)
  ca [--bundle]               print the HTTPS interception CA (--bundle: the bundle for the app);
                              needs no running hookproxy

SELECTOR is --all, --target URL, --target-id N, or dead letter ids;
--reason R narrows --all, --target and --target-id.

flags:
  --admin-url URL   admin API (HOOKPROXY_ADMIN_URL; default http:// + HOOKPROXY_ADMIN_LISTEN)
  --token T         bearer token (HOOKPROXY_ADMIN_TOKEN)
  --timeout D       give up after D (default 30s)
  --json            print the API's JSON instead of text
  status:    --sort pending|age|id, --limit N (default 50)
  dead list: --target URL, --target-id N, --reason R, --limit N, --offset N

exit codes: 0 done, 1 failed, 2 usage, 3 not found.
`

// cliConfig is what the command line reads from the environment: only
// the admin API's address and token, so that it works beside a server
// configuration it does not need to validate.
type cliConfig struct {
	AdminURL    string `env:"ADMIN_URL"`
	AdminToken  string `env:"ADMIN_TOKEN"`
	AdminListen string `env:"ADMIN_LISTEN" envDefault:"127.0.0.1:9090"`
}

// cliRunner is one invocation of an operator command.
type cliRunner struct {
	stdout, stderr io.Writer
	fs             *flag.FlagSet
	adminURL       string
	token          string
	timeout        time.Duration
	json           bool
}

// runCLI runs the operator command cmd with args; it reports handled
// false when cmd is not one of them (serve and the rest are run's).
func runCLI(ctx context.Context, cmd string, args []string, environ []string, stdout, stderr io.Writer) (handled bool, err error) {
	switch cmd {
	case "status", "dead", "retry-failed", "version", "health":
	default:
		return false, nil
	}
	cfg, err := env.ParseAsWithOptions[cliConfig](env.Options{Environment: env.ToMap(environ), Prefix: envPrefix})
	if err != nil {
		return true, fmt.Errorf("configuration: %w", err)
	}
	out := &firstErrWriter{w: stdout}
	c := &cliRunner{stdout: out, stderr: stderr, fs: flag.NewFlagSet(cmd, flag.ContinueOnError)}
	c.fs.SetOutput(io.Discard)
	c.fs.StringVar(&c.adminURL, "admin-url", cfg.AdminURL, "")
	c.fs.StringVar(&c.token, "token", cfg.AdminToken, "")
	// Written as the duration settings are: "30s" or a number of seconds.
	c.timeout = 30 * time.Second
	c.fs.Var((*Duration)(&c.timeout), "timeout", "")
	c.fs.BoolVar(&c.json, "json", false, "")
	if c.adminURL == "" {
		c.adminURL = listenURL(cfg.AdminListen)
	}

	switch cmd {
	case "version":
		err = c.version(args)
	case "status":
		err = c.status(ctx, args)
	case "health":
		err = c.health(ctx, args)
	case "retry-failed":
		err = c.replay(ctx, args, true)
	case "dead":
		if len(args) == 0 {
			err = usageErr("dead: want list, show, replay or purge")
			break
		}
		switch sub, rest := args[0], args[1:]; {
		case isHelp(sub):
			err = flag.ErrHelp
		case sub == "list" || sub == "ls":
			err = c.deadList(ctx, rest)
		case sub == "show":
			err = c.deadShow(ctx, rest)
		case sub == "replay":
			err = c.replay(ctx, rest, false)
		case sub == "purge":
			err = c.purge(ctx, rest)
		default:
			err = usageErr("dead %s: want list, show, replay or purge", sub)
		}
	}
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(out, cliUsage)
		err = nil
	}
	if exitCode(err) == exitUsage {
		fmt.Fprint(stderr, cliUsage)
	}
	if err == nil {
		// The output is the command's result: when it is lost (stdout on
		// a full disk, a closed pipe), the command failed, as with --json.
		err = writeOutput(0, out.err)
	}
	return true, err
}

// firstErrWriter passes writes on to w until one fails, and then fails
// every later one; err is that first failure. The text output is many
// unchecked writes: runCLI checks err once, at the end.
type firstErrWriter struct {
	w   io.Writer
	err error
}

func (f *firstErrWriter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.w.Write(p)
	if err != nil {
		f.err = err
	}
	return n, err
}

// listenURL is the URL of a listen address, with a wildcard host taken as
// the loopback.
func listenURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// parse parses flags anywhere among args and returns the other arguments.
func (c *cliRunner) parse(args []string) ([]string, error) {
	var rest []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr("%s: %v", c.fs.Name(), err)
		}
		args = c.fs.Args()
		if len(args) == 0 {
			return rest, nil
		}
		rest, args = append(rest, args[0]), args[1:]
	}
}

// decimalVar defines an integer flag written in decimal, as the settings
// are: flag's IntVar and Uint64Var read 010 as octal 8 and 0x10 as 16,
// and "dead purge --target-id 010" purged target 8.
func decimalVar[T int | uint64](fs *flag.FlagSet, p *T, name string, value T) {
	*p = value
	fs.Func(name, "", func(s string) error {
		var err error
		switch p := any(p).(type) {
		case *int:
			var n int64
			if n, err = strconv.ParseInt(s, 10, strconv.IntSize); err == nil {
				*p = int(n)
			}
		case *uint64:
			var n uint64
			if n, err = strconv.ParseUint(s, 10, 64); err == nil {
				*p = n
			}
		}
		switch {
		case errors.Is(err, strconv.ErrRange):
			return errors.New("out of range")
		case err != nil:
			return errors.New("want a whole number written in decimal")
		}
		return nil
	})
}

// given reports whether the flag name was on the command line, so that a
// value given explicitly can be told from the flag's default.
func (c *cliRunner) given(name string) bool {
	found := false
	c.fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// checkTargetFlags trims --target (a URL pasted with a line break, say)
// and refuses an explicit empty one and --target-id 0, which would
// otherwise drop the filter and select every dead letter (the API
// refuses target_id=0 as no target id).
func (c *cliRunner) checkTargetFlags(target *string, targetID uint64) error {
	*target = strings.TrimSpace(*target)
	switch {
	case c.given("target") && *target == "":
		return usageErr("%s: --target wants a target URL", c.fs.Name())
	case c.given("target-id") && targetID == 0:
		return usageErr("%s: --target-id 0: want a target id, 1 or more", c.fs.Name())
	}
	return nil
}

// client returns the admin API client and the context of the command.
func (c *cliRunner) client(ctx context.Context) (*admin.Client, context.Context, context.CancelFunc, error) {
	// Trimmed as the server trims it: a token from a file ends with a
	// newline, which no header can carry.
	cl, err := admin.NewClient(c.adminURL, strings.TrimSpace(c.token), nil)
	if err != nil {
		return nil, nil, nil, usageErr("%v (set HOOKPROXY_ADMIN_URL or --admin-url)", err)
	}
	if c.timeout <= 0 {
		cl.Close()
		return nil, nil, nil, usageErr("--timeout %v: want a positive duration", c.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return cl, ctx, func() { cancel(); cl.Close() }, nil
}

// apiErr makes an API error readable and gives it its exit code. named
// says the request was about dead letters the operator named by id: only
// then is a 404 exit 3, "not found" (a selection by target whose dead
// letters went meanwhile, or a route missing, is not).
func (c *cliRunner) apiErr(err error, named bool) error {
	var ae *admin.APIError
	switch {
	case admin.IsNotAdminAPI(err):
		// An answer without the admin API's mark, whatever its status (a
		// 2xx, or another server's 401): another server, or the proxy port.
		return fmt.Errorf("%w (is %s hookproxy's admin address? set HOOKPROXY_ADMIN_URL or --admin-url)", err, admin.RedactedURL(c.adminURL))
	case errors.As(err, &ae) && ae.Status == 401:
		return fmt.Errorf("%w (set HOOKPROXY_ADMIN_TOKEN or --token)", err)
	case named && admin.IsNotFound(err):
		return &exitError{code: exitNotFound, err: err}
	case errors.As(err, &ae) && ae.Status == 400:
		// The API refused a value given on the command line.
		return &exitError{code: exitUsage, err: err}
	case errors.As(err, &ae):
		return err
	default:
		return fmt.Errorf("admin API at %s: %w (is hookproxy running? set HOOKPROXY_ADMIN_URL or --admin-url)", admin.RedactedURL(c.adminURL), err)
	}
}

func (c *cliRunner) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	// As written, not "\u0026": a target is copied from it into --target.
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cliRunner) version(args []string) error {
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErr("version takes no arguments")
	}
	if c.json {
		return c.printJSON(map[string]string{"version": versionString()})
	}
	fmt.Fprintln(c.stdout, "hookproxy", versionString())
	return nil
}

// health is for container health checks and exec probes: it needs no
// curl in the image, and it sends the admin token, which /readyz requires
// when one is set.
func (c *cliRunner) health(ctx context.Context, args []string) error {
	ready := c.fs.Bool("ready", false, "")
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErr("health takes no arguments")
	}
	cl, ctx, done, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer done()
	if !*ready {
		if err := cl.Alive(ctx); err != nil {
			return c.apiErr(err, false)
		}
		if c.json {
			return c.printJSON(map[string]bool{"alive": true})
		}
		fmt.Fprintln(c.stdout, "alive")
		return nil
	}
	rd, err := cl.Ready(ctx)
	if err != nil {
		return c.apiErr(err, false)
	}
	if c.json {
		if err := c.printJSON(rd); err != nil {
			return err
		}
	}
	if !rd.Ready {
		var why []string
		for _, r := range rd.Reasons {
			why = append(why, r.Check+": "+r.Message)
		}
		return fmt.Errorf("not ready: %s", strings.Join(why, "; "))
	}
	if !c.json {
		fmt.Fprintln(c.stdout, "ready")
	}
	return nil
}

func (c *cliRunner) status(ctx context.Context, args []string) error {
	var q admin.TargetQuery
	c.fs.StringVar(&q.Sort, "sort", "pending", "")
	decimalVar(c.fs, &q.Limit, "limit", 50)
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErr("status takes no arguments")
	}
	if err := checkPaging(q.Limit, 0); err != nil {
		return err
	}
	cl, ctx, done, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer done()
	st, err := cl.Status(ctx)
	if err != nil {
		return c.apiErr(err, false)
	}
	tl, err := cl.Targets(ctx, q)
	if err != nil {
		return c.apiErr(err, false)
	}
	if c.json {
		return c.printJSON(struct {
			Status  admin.Status     `json:"status"`
			Targets admin.TargetList `json:"targets"`
		}{st, tl})
	}
	writeStatus(c.stdout, st, tl)
	return nil
}

// writeStatus prints the status as text: totals, then a table of targets.
func writeStatus(w io.Writer, st admin.Status, tl admin.TargetList) {
	state := "ready"
	if !st.Ready {
		state = "NOT READY"
	}
	fmt.Fprintf(w, "hookproxy %s: %s\n", st.Version, state)
	for _, r := range st.Reasons {
		fmt.Fprintf(w, "  %s: %s\n", r.Check, r.Message)
	}
	fmt.Fprintf(w, "pending:      %s, %s, %s", plural(st.PendingHooks, "hook"), bytesize(st.PendingBytes), plural(st.PendingTargets, "target"))
	if st.MaxPendingBytes > 0 {
		fmt.Fprintf(w, " (quota %s)", bytesize(st.MaxPendingBytes))
	}
	if st.PendingHooks > 0 {
		fmt.Fprintf(w, "; oldest %s ago", seconds(st.OldestAgeSeconds))
	}
	fmt.Fprintln(w)
	if st.OverdueSeconds > 0 {
		fmt.Fprintf(w, "overdue:      %s\n", seconds(st.OverdueSeconds))
	}
	fmt.Fprintf(w, "dead letters: %d (%d hooks)\n", st.DeadLetters, st.DeadLetterHooks)
	if st.GoneTargets > 0 {
		fmt.Fprintf(w, "gone targets: %d\n", st.GoneTargets)
	}
	if st.DiskBytes > 0 {
		fmt.Fprintf(w, "disk:         %s\n", bytesize(st.DiskBytes))
	}
	if len(tl.Targets) == 0 {
		fmt.Fprintln(w, "\nno targets with pending hooks")
		return
	}
	fmt.Fprintln(w)
	tw := table(w)
	fmt.Fprintln(tw, "ID\tTARGET\tPENDING\tBYTES\tOLDEST\tATTEMPTS\tNEXT\tLAST ERROR\tGONE")
	for _, t := range tl.Targets {
		oldest, next, last, gone := "-", "-", "-", ""
		if t.PendingHooks > 0 {
			oldest = seconds(t.OldestAgeSeconds)
		}
		if in := t.NextAttemptInSeconds; in != nil {
			if *in > 0 {
				next = "in " + seconds(*in)
			} else {
				next = "due"
			}
		}
		if t.LastError != "" {
			last = truncate(visible(t.LastError, ""), 40)
		}
		if t.Gone {
			gone = "gone"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n",
			t.ID, displayURL(t.URL), t.PendingHooks, bytesize(t.PendingBytes), oldest, t.Attempts, next, last, gone)
	}
	_ = tw.Flush()
	if len(tl.Targets) < tl.Total {
		fmt.Fprintf(w, "(%d of %d targets; see --limit and --sort)\n", len(tl.Targets), tl.Total)
	}
}

func (c *cliRunner) deadList(ctx context.Context, args []string) error {
	var q admin.DeadLetterQuery
	c.fs.StringVar(&q.Target, "target", "", "")
	decimalVar(c.fs, &q.TargetID, "target-id", 0)
	c.fs.StringVar(&q.Reason, "reason", "", "")
	decimalVar(c.fs, &q.Limit, "limit", admin.DefaultLimit)
	decimalVar(c.fs, &q.Offset, "offset", 0)
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usageErr("dead list takes no arguments (show takes an id)")
	}
	if err := c.checkTargetFlags(&q.Target, q.TargetID); err != nil {
		return err
	}
	if err := checkPaging(q.Limit, q.Offset); err != nil {
		return err
	}
	cl, ctx, done, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer done()
	dl, err := cl.DeadLetters(ctx, q)
	if err != nil {
		return c.apiErr(err, false)
	}
	if c.json {
		return c.printJSON(dl)
	}
	if dl.Total == 0 {
		fmt.Fprintln(c.stdout, "no dead letters")
		return nil
	}
	tw := table(c.stdout)
	fmt.Fprintln(tw, "ID\tTARGET\tREASON\tATTEMPTS\tSTATUS\tHOOKS\tBYTES\tGIVEN UP")
	for _, d := range dl.DeadLetters {
		status := "-"
		if d.LastStatus != 0 {
			status = strconv.Itoa(d.LastStatus)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n", d.ID, displayURL(d.Target), d.Reason, d.Attempts,
			status, d.HookCount, bytesize(d.BodyBytes), stamp(d.GivenUp))
	}
	_ = tw.Flush()
	if len(dl.DeadLetters) < dl.Total {
		fmt.Fprintf(c.stdout, "(%d of %d dead letters from %d; see --limit and --offset)\n", len(dl.DeadLetters), dl.Total, dl.Offset)
	}
	return nil
}

func (c *cliRunner) deadShow(ctx context.Context, args []string) error {
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErr("dead show takes one dead letter id")
	}
	// An empty id would ask for the route /api/dead-letters/, which the
	// API answers 404 "no such route": not a dead letter that was not
	// found.
	id := strings.TrimSpace(rest[0])
	if id == "" {
		return usageErr("dead show: empty dead letter id")
	}
	cl, ctx, done, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer done()
	d, err := cl.DeadLetter(ctx, id)
	if err != nil {
		return c.apiErr(err, true)
	}
	if c.json {
		return c.printJSON(d)
	}
	w := c.stdout
	fmt.Fprintf(w, "dead letter %s\n", d.ID)
	fmt.Fprintf(w, "target:    %s (id %d)\n", visible(d.Target, ""), d.TargetID)
	fmt.Fprintf(w, "reason:    %s", d.Reason)
	if d.Detail != "" {
		fmt.Fprintf(w, ": %s", visible(d.Detail, ""))
	}
	fmt.Fprintf(w, "\nattempts:  %d, first %s, last %s\n", d.Attempts, stamp(d.FirstAttempt), stamp(d.LastAttempt))
	fmt.Fprintf(w, "given up:  %s\n", stamp(d.GivenUp))
	fmt.Fprintf(w, "hooks:     %d (%s)\n", d.HookCount, bytesize(d.BodyBytes))
	for _, h := range d.Hooks {
		fmt.Fprintf(w, "\n--- hook %s: %s, received %s, %s\n", h.ID, h.Method, stamp(h.Received), bytesize(h.BodyBytes))
		if h.BodyBase64 != nil {
			fmt.Fprintf(w, "(binary body, %d bytes; see --json)\n", len(h.BodyBase64))
			continue
		}
		fmt.Fprintln(w, visible(h.Body, "\n\t"))
	}
	return nil
}

// selector reads a dead-letter selector from flags and arguments.
func (c *cliRunner) selector(args []string, all bool) (admin.Selector, error) {
	var sel admin.Selector
	c.fs.BoolVar(&sel.All, "all", all, "")
	c.fs.StringVar(&sel.Target, "target", "", "")
	decimalVar(c.fs, &sel.TargetID, "target-id", 0)
	c.fs.StringVar(&sel.Reason, "reason", "", "")
	rest, err := c.parse(args)
	if err != nil {
		return sel, err
	}
	if err := c.checkTargetFlags(&sel.Target, sel.TargetID); err != nil {
		return sel, err
	}
	for _, id := range rest {
		// An empty id is refused by Validate.
		sel.IDs = append(sel.IDs, strings.TrimSpace(id))
	}
	if err := sel.Validate(); err != nil {
		return sel, usageErr("%s: %v", c.fs.Name(), err)
	}
	return sel, nil
}

func (c *cliRunner) replay(ctx context.Context, args []string, all bool) error {
	return deadLetterAction(ctx, c, "replay", args, all, (*admin.Client).Replay, func(res admin.ReplayResult) (string, []string) {
		line := fmt.Sprintf("replayed %s (%s): back in their targets' queues",
			plural(res.DeadLetters, "dead letter"), plural(res.Hooks, "hook"))
		if len(res.Unreadable) > 0 {
			line += fmt.Sprintf("; not replayed, their hooks could not be read (reason unreadable, purge them): %s",
				strings.Join(res.Unreadable, ", "))
		}
		return line, res.NotFound
	})
}

func (c *cliRunner) purge(ctx context.Context, args []string) error {
	return deadLetterAction(ctx, c, "purge", args, false, (*admin.Client).Purge, func(res admin.PurgeResult) (string, []string) {
		return fmt.Sprintf("purged %s", plural(res.DeadLetters, "dead letter")), res.NotFound
	})
}

// deadLetterAction runs act (op: replay, purge) on the dead letters args
// select and prints its result: as JSON, or as the line report makes.
// Ids the operator named that are not dead letters (report's second
// result) make it fail with exit 3. A selection by --all, --target or
// --target-id never does: what it selected and someone else replayed or
// purged meanwhile is simply not done here.
func deadLetterAction[R any](ctx context.Context, c *cliRunner, op string, args []string, all bool,
	act func(*admin.Client, context.Context, admin.Selector) (R, error), report func(R) (string, []string)) error {
	sel, err := c.selector(args, all)
	if err != nil {
		return err
	}
	cl, ctx, done, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer done()
	named := len(sel.IDs) > 0
	res, err := act(cl, ctx, sel)
	if errors.Is(err, context.DeadlineExceeded) && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The admin API makes a change it has begun whoever waits for
		// its answer, and a replay of many dead letters takes minutes:
		// "is hookproxy running?" would send the operator the wrong way.
		return fmt.Errorf("%s: no answer within --timeout %v; if hookproxy got the request, it goes on with the %s "+
			"(hookproxy dead list shows what is left; raise --timeout to wait for the answer): %w", op, c.timeout, op, err)
	}
	if err != nil {
		return c.apiErr(err, named)
	}
	line, missing := report(res)
	if !named {
		missing = nil
	}
	if c.json {
		if err := c.printJSON(res); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(c.stdout, line)
	}
	return notFound(missing)
}

// tableWriter aligns tab-separated cells in columns. Flush writes the
// table, its lines without the padding of empty last cells.
type tableWriter struct {
	*tabwriter.Writer
	buf bytes.Buffer
	out io.Writer
}

func table(w io.Writer) *tableWriter {
	t := &tableWriter{out: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *tableWriter) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for line := range strings.Lines(t.buf.String()) {
		out.WriteString(strings.TrimRight(line, " \n"))
		out.WriteString("\n")
	}
	t.buf.Reset()
	_, err := io.WriteString(t.out, out.String())
	return err
}

// notFound is the error for ids that matched no dead letter.
func notFound(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	return &exitError{code: exitNotFound, err: fmt.Errorf("no such dead letters: %s", strings.Join(ids, ", "))}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// displayURL shortens a target URL for a table: no credentials, and a
// query (which often holds a token) shown as "?...". --json has it whole.
func displayURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return truncate(visible(raw, ""), 60)
	}
	s := u.Scheme + "://" + u.Host + u.EscapedPath()
	if u.RawQuery != "" {
		s += "?..."
	}
	return truncate(visible(s, ""), 60)
}

// visible is s with each control character but those in keep written as
// its Go escape (\x1b, \a, \n, \u009b), so that printing s cannot act on
// the operator's terminal. What the commands print comes in part from
// strangers: a dead letter's detail holds the names in a receiver's TLS
// certificate, and a terminal takes an escape sequence there for a
// command (clear the screen, set the clipboard, hide the lines around
// it); a line break or a tab would fake lines and columns. --json
// has the values whole, as JSON writes them.
func visible(s, keep string) string {
	escaped := func(r rune) bool { return unicode.IsControl(r) && !strings.ContainsRune(keep, r) }
	if !strings.ContainsFunc(s, escaped) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if escaped(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// seconds formats a number of seconds as a duration to the second.
func seconds(s float64) string {
	d := time.Duration(s * float64(time.Second)).Round(time.Second)
	if d < time.Second {
		return "<1s"
	}
	return d.String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// bytesize formats a byte count in binary units.
func bytesize(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
