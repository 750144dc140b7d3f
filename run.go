package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"hookproxy/buffer"
	"hookproxy/proxy"
	"hookproxy/sender"
)

// The buffer is what the proxy and the sender each declare they need.
var (
	_ proxy.Store  = (*buffer.Store)(nil)
	_ sender.Store = (*buffer.Store)(nil)
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
  serve     run the proxy and the sender (the default)
  version   print the version

Settings are environment variables (HOOKPROXY_*); see README.md.
`

// run is the whole program; main only adds signal handling, so tests can
// run hookproxy in-process.
func run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			args = args[1:]
		case "version", "--version":
			fmt.Fprintln(stdout, "hookproxy", versionString())
			return nil
		case "help", "-h", "--help":
			fmt.Fprint(stdout, usage)
			return nil
		default:
			fmt.Fprint(stderr, usage)
			return fmt.Errorf("unknown command %q", args[0])
		}
	}
	if len(args) > 0 {
		return fmt.Errorf("serve takes no arguments (settings are environment variables), got %q", args)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		return err
	}
	return serve(ctx, cfg, newLogger(cfg, stderr))
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := cfg.level()
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs hookproxy until ctx is done, then shuts down in order: stop
// intake (in-flight captures finish), stop the scheduler, send every
// pending batch within the drain timeout, close the store. What is not
// delivered by then stays on disk for the next start.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	store, err := buffer.Open(buffer.Options{
		Dir:             cfg.DataDir,
		MaxPendingBytes: int64(cfg.MaxPendingBytes),
		Logger:          log.With("component", "buffer"),
	})
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("close store", "error", err)
		}
	}()

	snd, err := sender.New(sender.Options{
		Store:         store,
		BatchSize:     cfg.BatchSize,
		BatchTime:     time.Duration(cfg.BatchTime),
		BatchMaxWait:  time.Duration(cfg.BatchMaxWait),
		Retries:       cfg.Retries,
		RetryInterval: time.Duration(cfg.RetryInterval),
		OnGiveUp:      cfg.OnGiveUp,
		SendTimeout:   time.Duration(cfg.SendTimeout),
		Concurrency:   cfg.SendConcurrency,
		UserAgent:     "hookproxy/" + versionString(),
		Logger:        log.With("component", "sender"),
	})
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	store.SetNotify(snd.Notify)

	px, err := proxy.New(proxy.Options{
		Store:            store,
		CaptureMethods:   cfg.CaptureMethods,
		CaptureHosts:     cfg.CaptureHosts,
		MaxBodyBytes:     int64(cfg.MaxBodyBytes),
		RequireValidJSON: cfg.batching(),
		OnStoreError:     cfg.OnStoreError,
		IdleTimeout:      time.Duration(cfg.IdleTimeout),
		Logger:           log.With("component", "proxy"),
	})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	st := store.Stats()
	log.Info("hookproxy started", "version", versionString(), "proxy_addr", ln.Addr().String(),
		"data_dir", cfg.DataDir, "pending_hooks", st.PendingHooks, "pending_targets", st.PendingTargets)

	sendCtx, stopSending := context.WithCancel(context.Background())
	defer stopSending()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := snd.Run(sendCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("sender stopped", "error", err)
		}
	})
	served := make(chan error, 1)
	go func() { served <- px.Serve(ln) }()

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: intake stopped, draining pending batches", "drain_timeout", cfg.DrainTimeout)
	case err := <-served:
		runErr = fmt.Errorf("proxy stopped: %w", err)
		log.Error("proxy stopped", "error", err)
	}

	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if err := px.Shutdown(shutCtx); err != nil {
		log.Warn("proxy shutdown", "error", err)
	}
	cancel()
	stopSending()
	wg.Wait()

	if cfg.DrainTimeout > 0 {
		drainCtx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeout))
		if err := snd.Drain(drainCtx); err != nil {
			log.Warn("drain incomplete", "error", err)
		}
		cancel()
	}
	st = store.Stats()
	log.Info("hookproxy stopped", "pending_hooks", st.PendingHooks, "pending_targets", st.PendingTargets)
	return runErr
}
