// Package dmpkg builds offline DM packages for tests: dm-<version>.tar.gz in
// the seed-000 layout, whose programs are the DM simulator
// (testbed/dmsim/cmd/dmsim) compiled for linux with the package's version
// linked in.
//
// [Build] writes a package file (the dm-package command does it for
// people); [Package] returns the bytes to a test; [PackageWith] adds
// entries as given (set-uid files, devices, paths or links out) to the
// package or its grafana.tar.gz, for tests of what dmgr refuses, or pads
// dm-master and dm-worker to a real package's size (Options.PadBinaries).
// [WriteReal] and [BuildReal] pack real DM binaries (a pingcap/tiflow
// build) in the same layout, without monitoring, for `task test:realdm`. The archive holds its
// entries at the top level, no leading dm-<version>/ directory:
//
//	bin/dm-master                 the simulator binary
//	bin/dm-worker                 hard link to bin/dm-master
//	bin/prometheus                hard link to bin/dm-master
//	bin/alertmanager              hard link to bin/dm-master
//	conf/dm-master.toml           default configs (sim-start-delay shown, commented out)
//	conf/dm-worker.toml
//	conf/alertmanager.yml         a route to a "blackhole" receiver
//	conf/dm_worker.rules.yml      alert rules
//	template/*.tmpl               systemd unit, run scripts, prometheus.yml, grafana.ini,
//	                              grafana provisioning (text/template, tiup's field names)
//	grafana.tar.gz                bin/grafana-server (the simulator), bin/grafana-cli (hard
//	                              link), conf/defaults.ini, dashboards/dm.json,
//	                              dashboards/dm_instances.json, plugins/, provisioning/
//	                              dashboards/ and datasources/ (empty)
//	others/dmctl                  hard link to bin/dm-master
//	others/task_basic.yml, others/task_advanced.yml
//
// The simulator runs the program it is installed as, so one binary serves
// every name; hard links keep the package at the size of one binary plus
// grafana's copy. Entries have a fixed time, owner and order, and go build
// -trimpath is reproducible, so one version and arch always give the same
// bytes.
//
// The templates are a plausible part of the layout; dmgr renders the files
// it deploys itself. Their fields: DeployDir, DataDir, LogDir, IP,
// ListenHost, Port, and per template Name, PeerPort, InitialCluster, Join
// (dm-master, dm-worker), Retention (prometheus), ClusterPort, ClusterPeers
// (alertmanager), ServiceName, Role, User (systemd unit), ClusterName,
// PrometheusAddr, MasterAddrs, WorkerAddrs, AlertmanagerAddrs, GrafanaAddrs
// (prometheus.yml, grafana provisioning), Username, Password (grafana.ini).
package dmpkg
