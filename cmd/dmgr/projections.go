package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/eventstore"
	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/chserver"
	"github.com/dmgr/dmgr/projections"
)

// newProjections returns the ClickHouse projections that serve the API's
// queries, and the projector that feeds them, to run in the background:
// it campaigns in etcd so that one server projects at a time, and closes
// the ClickHouse connection when it stops (after the HTTP server has).
func (m *Main) newProjections(js jetstream.JetStream, store *eventstore.Store, chAddr string) (*projections.Store, func(context.Context) error, error) {
	conn, err := projections.Dial(chAddr, m.stores.ch)
	if err != nil {
		return nil, nil, err
	}
	st, err := projections.New(conn, projections.Options{JS: js, Log: m.log})
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	host, _ := os.Hostname()
	p := projections.NewProjector(projections.ProjectorConfig{Store: st, JS: js, Events: store, Etcd: m.etcd,
		SessionTTL: m.cfg.sessionTTL, ID: fmt.Sprintf("%s-%d", host, os.Getpid()), Log: m.log})
	run := func(ctx context.Context) error {
		defer conn.Close()
		return p.Run(ctx)
	}
	return st, run, nil
}

const projectionsUsage = `Usage:
  dmgr projections rebuild [flags]   replay the event stream from sequence 1 into a new
                                     generation of ClickHouse tables, then switch queries
                                     and the running projector over to it

Run "dmgr projections rebuild -h" for the flags.
`

// runProjections is `dmgr projections …`.
func runProjections(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := subcommand(args, "projections", "rebuild", projectionsUsage, stderr); err != nil {
		return err
	}
	fs := flag.NewFlagSet("dmgr projections rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", envOr("DMGR_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL(s), comma-separated (env DMGR_NATS_URL)")
	chAddr := fs.String("clickhouse-addr", envOr("DMGR_CLICKHOUSE_ADDR", ""), "ClickHouse native-protocol address host:port (env DMGR_CLICKHOUSE_ADDR)")
	var bus busConfig
	addBusFlags(fs, &bus, busauth.Projector)
	var chUser, chPasswordFile string
	registerClickHouseLogin(fs, &chUser, &chPasswordFile, false)
	level := fs.String("log-level", envOr("DMGR_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env DMGR_LOG_LEVEL)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dmgr projections rebuild: unexpected argument %q", fs.Arg(0))
	}
	if *chAddr == "" {
		return errors.New("dmgr projections rebuild: --clickhouse-addr (or DMGR_CLICKHOUSE_ADDR) is required")
	}
	if err := bus.check("dmgr projections rebuild"); err != nil {
		return err
	}
	chCred, err := clickHouseLogin(chUser, chPasswordFile)
	if err != nil {
		return fmt.Errorf("dmgr projections rebuild: %w", err)
	}
	lv, err := zerolog.ParseLevel(*level)
	if err != nil {
		return fmt.Errorf("--log-level %q: %w", *level, err)
	}
	log := zerolog.New(stderr).With().Timestamp().Logger().Level(lv)
	// A refused login fails here, before anything is read or created.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	check, err := chserver.Connect(cctx, *chAddr, chCred)
	cancel()
	if err != nil {
		return err
	}
	_ = check.Close()
	// The projector's role: it reads the event stream through its own
	// consumers and writes nothing on the bus.
	nc, err := dialBus(ctx, *natsURL, busauth.Identity{Role: busauth.Projector}, bus.nkeyFile, bus, true, log,
		nats.Name("dmgr projections rebuild"))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	store, err := eventstore.OpenExisting(ctx, js)
	if err != nil {
		return err
	}
	conn, err := projections.Dial(*chAddr, chCred)
	if err != nil {
		return err
	}
	defer conn.Close()
	st, err := projections.New(conn, projections.Options{JS: js, Log: log})
	if err != nil {
		return err
	}
	res, err := projections.Rebuild(ctx, projections.ProjectorConfig{Store: st, JS: js, Events: store, Log: log})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "projections rebuilt: generation %d -> %d, %d events up to commit_seq %d in %s\n",
		res.From, res.To, res.Events, res.Seq, res.Took.Round(time.Millisecond))
	return nil
}
