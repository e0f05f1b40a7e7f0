// Command ferretdb runs FerretDB 1.24 embedded, on its SQLite backend, for lethe's local stack.
//
// Embedding sidesteps the upstream cmd's panic on the git-ignored build/version/version.txt
// (FerretDB issue #2982), and embedded FerretDB never sends telemetry.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	sqliteURL := flag.String("sqlite-url", "file:var/ferretdb/", "SQLite directory URI; must start with file: and end with /")
	logLevel := flag.String("log-level", "warn", "log level: debug, info, warn or error")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: %s [flags]\n\nRuns FerretDB (MongoDB wire protocol) on SQLite.\n\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "bad -log-level: %v\n", err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// FerretDB itself listens on a Unix socket; clients reach it through the serializing proxy (serialize.go).
	socket := filepath.Join(os.TempDir(), fmt.Sprintf("lethe-ferretdb-%d.sock", os.Getpid()))
	_ = os.Remove(socket)
	defer os.Remove(socket)
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{Unix: socket},
		Handler:   "sqlite",
		SQLiteURL: *sqliteURL,
		Logger:    logger,
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Error("cannot listen", "addr", *listen, "error", err)
		os.Exit(1)
	}
	go func() {
		<-ctx.Done()
		listener.Close()
	}()
	go func() {
		p := &proxy{backend: socket, logger: logger}
		if err := p.serve(listener); err != nil && ctx.Err() == nil {
			logger.Error("proxy stopped", "error", err)
			os.Exit(1)
		}
	}()

	logger.Warn("FerretDB listening", "addr", *listen, "sqlite", *sqliteURL)
	if err := f.Run(ctx); err != nil && ctx.Err() == nil {
		logger.Error("FerretDB stopped", "error", err)
		os.Exit(1)
	}
}
