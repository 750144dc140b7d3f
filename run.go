package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/caarlos0/env/v11"

	"hookproxy/admin"
	"hookproxy/buffer"
	"hookproxy/egress"
	"hookproxy/proxy"
	"hookproxy/sender"
)

// The buffer and the sender are what the proxy, the sender and the admin
// API each declare they need.
var (
	_ proxy.Store    = (*buffer.Store)(nil)
	_ sender.Store   = (*buffer.Store)(nil)
	_ admin.Store    = (*buffer.Store)(nil)
	_ admin.Progress = (*sender.Sender)(nil)
)

// version is stamped at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `usage: hookproxy [command]

commands:
  serve         run the proxy and the sender (the default)
  status        targets and totals of a running hookproxy
  dead          list, show, replay or purge dead letters
  retry-failed  replay every dead letter
  health        exit 0 when a running hookproxy is alive (--ready: ready)
  ca            print the HTTPS interception CA (--bundle: the bundle for the app)
  version       print the version (also: hookproxy --version)

"hookproxy <command> -h" tells more.

Settings are environment variables (HOOKPROXY_*); see README.md.
`

// run is the whole program; main only adds signal handling, so tests can
// run hookproxy in-process.
func run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		// Operator commands talk to a running hookproxy's admin API.
		if handled, err := runCLI(ctx, args[0], args[1:], environ, stdout, stderr); handled {
			return err
		}
		switch cmd := args[0]; {
		case cmd == "serve":
			args = args[1:]
		case cmd == "ca":
			return runCA(args[1:], environ, stdout, stderr) // tls.go
		case cmd == "--version":
			return writeOutput(fmt.Fprintln(stdout, "hookproxy", versionString()))
		case isHelp(cmd):
			return writeOutput(fmt.Fprint(stdout, usage))
		default:
			fmt.Fprint(stderr, usage)
			return usageErr("unknown command %q", args[0])
		}
	}
	if len(args) > 0 {
		if isHelp(args[0]) { // serve -h
			return writeOutput(fmt.Fprint(stdout, usage))
		}
		fmt.Fprint(stderr, usage)
		return usageErr("serve takes no arguments (settings are environment variables), got %q", args)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if unknown := unknownSettings(env.ToMap(environ)); len(unknown) > 0 {
		// Not refused: Kubernetes adds variables of its own under the
		// prefix (left out of the list), and a new setting may reach an old
		// hookproxy. Names only: a value may be a secret.
		log.Warn("unknown settings ignored: hookproxy reads no such variables", "variables", strings.Join(unknown, ", "))
	}
	limit, source := applyMemoryLimit(cfg, environ)
	log.Info("memory limit", "bytes", limit, "source", source)
	return serve(ctx, cfg, log)
}

// writeOutput is the error of a command whose whole result is one write
// to standard output: lost output (a full disk, a closed pipe) is a
// failure.
func writeOutput(_ int, err error) error {
	if err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// isHelp reports whether arg asks for the usage.
func isHelp(arg string) bool { return arg == "help" || arg == "-h" || arg == "--help" }

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := cfg.level()
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// storeReserve is the free space captures leave on the data directory's
// file system beyond the size of Badger's tables, which the store adds:
// past it a capture is a store error (HOOKPROXY_ON_STORE_ERROR)
// rather than a write that crashes the process on a full disk (see
// buffer.Options.MinFreeBytes). It holds a few of Badger's sparse 16 MiB
// memtable logs, the tables their flushes write and the value log's
// growth between two group commits.
const storeReserve = 64 << 20

// serve runs hookproxy until ctx is done, then shuts down in order: stop
// intake (in-flight captures finish), stop the scheduler, send every
// pending batch within the drain timeout, close the store. What is not
// delivered by then stays on disk for the next start.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	metrics := admin.NewMetrics(versionString())
	store, err := buffer.Open(buffer.Options{
		Dir:             cfg.DataDir,
		MaxPendingBytes: int64(cfg.MaxPendingBytes),
		MinFreeBytes:    storeReserve,
		Logger:          log.With("component", "buffer"),
		OnGivenUp:       metrics.StoreGivenUp,
	})
	if err != nil {
		// A directory that is not one, that cannot be made, or that
		// another hookproxy holds: named as every bad setting is.
		return fmt.Errorf("HOOKPROXY_DATA_DIR: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "error", err)
		}
	}()

	// HTTPS: the interception CA, the app's bundle, the roots that verify
	// receivers (tls.go).
	hs, err := setupHTTPS(cfg, log.With("component", "https"))
	if err != nil {
		return err
	}
	cfg.logDeliveryPolicy(log.With("component", "sender"))

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s (HOOKPROXY_LISTEN): %w", cfg.Listen, err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("listen %s (HOOKPROXY_ADMIN_LISTEN): %w", cfg.AdminListen, err)
	}
	// Serve closes each listener once it serves; until then, a failed
	// start closes them here.
	serving := false
	defer func() {
		if !serving {
			_ = ln.Close()
			_ = adminLn.Close()
		}
	}()
	// Neither deliveries nor requests passed through may connect to
	// hookproxy's own listeners: through the proxy, anyone who may use it
	// would reach an admin API bound to loopback.
	self := ownListeners(log, ln.Addr(), adminLn.Addr())
	guard := cfg.egressGuard()
	guard.Self = self

	snd, err := sender.New(sender.Options{
		Store:         store,
		BatchSize:     cfg.BatchSize,
		BatchTime:     time.Duration(cfg.BatchTime),
		BatchMaxWait:  time.Duration(cfg.BatchMaxWait),
		BatchMaxBytes: int64(cfg.BatchMaxBytes),
		Retries:       cfg.Retries,
		Backoff:       cfg.RetryBackoff,
		RetryInterval: time.Duration(cfg.RetryInterval),
		// Never below RETRY_INTERVAL: an old interval of an hour keeps
		// working without a second setting.
		RetryMaxInterval: max(time.Duration(cfg.RetryMaxInterval), time.Duration(cfg.RetryInterval)),
		RetryMaxAge:      time.Duration(cfg.RetryMaxAge),
		OnGiveUp:         cfg.OnGiveUp,
		SendTimeout:      time.Duration(cfg.SendTimeout),
		Concurrency:      cfg.SendConcurrency,
		UserAgent:        "hookproxy/" + versionString(),
		// Every delivery dial, redirect hops included, goes through the
		// egress guard (delivery.go); pass-through traffic only through
		// its refusal of hookproxy's own listeners.
		Guard:           guard,
		TLSConfig:       hs.upstreamTLS,
		FollowRedirects: cfg.FollowRedirects,
		SigningSecrets:  cfg.SigningSecret,
		GoneWebhook:     cfg.GoneWebhook,
		Logger:          log.With("component", "sender"),
		OnAttempt:       metrics.Attempt,
		OnDelivered:     metrics.Delivered,
		OnGivenUp:       metrics.GivenUp,
	})
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	store.SetNotify(snd.Notify)

	files := openFileLimit()
	conns := maxConns(files)
	if conns > 0 && files < lowFileLimit {
		log.Warn("open-file limit is low: raise it (ulimit -n, systemd's LimitNOFILE, the container's nofile)",
			"limit", files, "max_app_connections", conns)
	}

	forward := sender.NewTransport(cfg.SendConcurrency, hs.upstreamTLS, guard)
	defer forward.CloseIdleConnections()
	px, err := proxy.New(proxy.Options{
		Store:            store,
		CaptureMethods:   cfg.CaptureMethods,
		CaptureHosts:     cfg.CaptureHosts,
		MaxBodyBytes:     int64(cfg.MaxBodyBytes),
		RequireValidJSON: cfg.batching(),
		OnStoreError:     cfg.OnStoreError,
		// A forwarded hook goes to its subscriber URL as a delivery of
		// one hook would: through the egress guard, with an id, signed.
		ForwardTransport:  snd.Forwarder(forward),
		IdleTimeout:       time.Duration(cfg.IdleTimeout),
		MaxConns:          conns,
		MaxCapturingBytes: int64(cfg.MaxCapturingBytes),
		Logger:            log.With("component", "proxy"),
		OnCapture:         metrics.CaptureObserved,
		OnCaptureWait:     metrics.CaptureWaited,
		OnRefuse:          metrics.Refused,
		OnForward:         metrics.Forwarded,
		OnPassThrough:     metrics.PassThrough,
		// HTTPS interception and proxy credentials (tls.go).
		TLSConfig:         hs.ca.TLSConfig,
		MITMHosts:         cfg.MITMHosts,
		UpstreamTLSConfig: hs.upstreamTLS,
		ProxyAuth:         cfg.ProxyAuth,
		DialControl:       self.Control,
	})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}

	// The admin listener serves until everything else has stopped, so
	// readiness and metrics stay visible through the drain.
	adm, err := admin.New(admin.Options{
		Store:           store,
		Progress:        snd,
		Metrics:         metrics,
		Token:           cfg.AdminToken,
		StallAfter:      time.Duration(cfg.StallAfter),
		MaxPendingBytes: int64(cfg.MaxPendingBytes),
		DiskUsage:       store.DiskUsage,
		Space:           store.Space,
		StoreCheck:      store.Check,
		OnTargetChange:  snd.Notify,
		Version:         versionString(),
		Logger:          log.With("component", "admin"),
		CACert:          hs.ca.CertPEM(),
	})
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	adminServed := make(chan error, 1)
	go func() { adminServed <- adm.Serve(adminLn) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := adm.Shutdown(ctx); err != nil {
			log.Warn("admin shutdown", "error", err)
		}
		if err := <-adminServed; err != nil {
			log.Error("admin listener stopped", "error", err)
		}
	}()
	log.Info("admin listening", "admin_addr", adminLn.Addr().String(), "token", cfg.AdminToken != "")
	warnExposed(log, cfg, ln.Addr(), adminLn.Addr())

	st := store.Stats()
	log.Info("hookproxy started", "version", versionString(), "proxy_addr", ln.Addr().String(),
		"data_dir", cfg.DataDir, "pending_hooks", st.PendingHooks, "pending_targets", st.PendingTargets)
	// The dead-letter totals are counted once, now, in the background:
	// that reads every dead letter, and started now it is done, or under
	// way, when the first scrape comes (a scrape or /api/status waits for
	// a count under way).
	go func() {
		if _, err := store.DeadLetterTotals(); err != nil && !errors.Is(err, buffer.ErrClosed) {
			log.Warn("count the dead letters", "error", err)
		}
	}()

	// Scheduling stops at shutdown; the attempts in progress then may
	// finish within the drain deadline (a receiver answering a batch is
	// not sent it again by the drain).
	schedCtx, stopScheduling := context.WithCancel(context.Background())
	defer stopScheduling()
	attemptsCtx, cutAttempts := context.WithCancel(context.Background())
	defer cutAttempts()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := snd.Run(schedCtx, attemptsCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("sender stopped", "error", err)
		}
	})
	served := make(chan error, 1)
	go func() { served <- px.Serve(ln) }()
	serving = true

	var runErr error
	select {
	case <-ctx.Done():
		adm.SetDraining(true)
		log.Info("shutting down: intake stopped, draining pending batches", "drain_timeout", cfg.DrainTimeout)
	case err := <-served:
		adm.SetDraining(true)
		runErr = fmt.Errorf("proxy stopped: %w", err)
		log.Error("proxy stopped", "error", err)
	}

	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := px.Shutdown(shutCtx); err != nil {
		log.Warn("proxy shutdown", "error", err)
	}
	cancel()
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout))
	defer cancelDrain()
	stopScheduling()
	stopCut := context.AfterFunc(drainCtx, cutAttempts) // at once without a drain
	if cfg.DrainTimeout > 0 {
		log.Info("no new delivery attempts; those in progress may finish until the drain deadline")
	}
	wg.Wait()
	stopCut()

	if cfg.DrainTimeout > 0 {
		if err := snd.Drain(drainCtx); err != nil {
			log.Warn("drain incomplete", "error", err)
		}
	}
	st = store.Stats()
	log.Info("hookproxy stopped", "pending_hooks", st.PendingHooks, "pending_targets", st.PendingTargets)
	return runErr
}

// warnExposed warns about listeners that other hosts may reach without
// credentials: anyone reaching the proxy can send through it (requests
// passed through are not checked by the egress guard), and anyone
// reaching the admin API can replay and purge dead letters.
func warnExposed(log *slog.Logger, cfg Config, proxyAddr, adminAddr net.Addr) {
	if cfg.ProxyAuth == "" && !isLoopback(proxyAddr) {
		log.Warn("proxy open to the network without credentials: set HOOKPROXY_PROXY_AUTH, or HOOKPROXY_LISTEN to a loopback address when the app runs on this host",
			"proxy_addr", proxyAddr.String())
	}
	if cfg.AdminToken == "" && !isLoopback(adminAddr) {
		log.Warn("admin API open to the network without a token: set HOOKPROXY_ADMIN_TOKEN", "admin_addr", adminAddr.String())
	}
}

// ownListeners is the egress.Self of hookproxy's listeners, with the
// host's interface addresses, through which a listener on a wildcard
// address is reached too.
func ownListeners(log *slog.Logger, listeners ...net.Addr) *egress.Self {
	var (
		mu     sync.Mutex
		last   []netip.Addr // the last list read, kept when a read fails
		warned bool
	)
	local := func() []netip.Addr {
		ifAddrs, err := net.InterfaceAddrs()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if !warned {
				warned = true
				log.Warn("list interface addresses: own listeners on a wildcard address are known by loopback and the addresses last listed", "error", err)
			}
			return last
		}
		last = nil
		for _, a := range ifAddrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					last = append(last, ip)
				}
			}
		}
		return last
	}
	local()
	return egress.NewSelf(listeners, local)
}

// isLoopback reports whether a listener's address is a loopback one.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
