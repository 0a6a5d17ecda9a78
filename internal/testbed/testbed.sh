#!/usr/bin/env bash
# testbed.sh — N test hosts on this one machine, for dmgr's integration tests.
#
# Each host is a network namespace with its own address on a Linux bridge, its
# own mount, UTS and PID namespaces (a private /etc copied from the real one,
# private /home, /root, /srv, /tmp, /var/tmp, /var/log and a tmpfs /run; its
# own hostname; its own process list) and a real OpenSSH sshd on port 22 with
# its own ed25519 host key. Everything started over SSH lives in those
# namespaces. The bridge in the root namespace has the subnet's .1 address, so
# processes here (dmgr's agents) reach every host; hosts reach each other.
#
# Users on every host:
#   root    key login              ($TESTBED_DIR/keys/root_ed25519)
#   dmgr    key login, sudo without password ($TESTBED_DIR/keys/dmgr_ed25519)
#   dmpass  password login, sudo with that password ($TESTBED_DIR/keys/dmpass.password)
#
# Usage (as root):
#   testbed.sh up N        create (or complete) hosts 1..N, print a summary and
#                          write $TESTBED_DIR/hosts.json
#   testbed.sh down        tear everything down (also a half-built bed)
#   testbed.sh stop I      kill every process of host I (like pulling the plug)
#   testbed.sh start I     boot host I again: same host key and files, a fresh
#                          /run, only sshd running
#   testbed.sh cut I       take host I off the network; restore I puts it back
#   testbed.sh rekey I     give host I a new host key (sshd reloads)
#   testbed.sh exec I CMD… run CMD inside host I's namespaces
#   testbed.sh status
#
# Environment:
#   TESTBED_DIR     state directory (default /tmp/dmgr-testbed)
#   TESTBED_PREFIX  names of namespaces and links, [a-z][a-z0-9]*, at most 10
#                   characters (default dmgr); beds with different prefixes
#                   and directories never collide
#   TESTBED_SUBNET  A.B.C.0/24 (default: derived from the prefix inside
#                   198.18.0.0/15, the range reserved for network tests)
#   TESTBED_TMPFS   "no" keeps a new bed's state directory on disk; by default
#                   it is a tmpfs (the hosts' files are in memory until down)
#
# Exit status 75 from up means the subnet or the names are taken by something
# else: choose another TESTBED_PREFIX or TESTBED_SUBNET (the Go helper retries
# with a new prefix).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
TESTBED_DIR=$(realpath -m "${TESTBED_DIR:-/tmp/dmgr-testbed}")
SSHD=/usr/sbin/sshd
MAX_HOSTS=200
EX_TEMPFAIL=75

die() { echo "testbed: $*" >&2; exit 1; }
note() { echo "testbed: $*" >&2; }

need_root() {
	[ "$(id -u)" = 0 ] || die "needs root (network namespaces, bridges, mounts); run it as root: sudo -E $0 ${ARGS[*]}"
}

need_tools() {
	local missing=() t
	[ -x "$SSHD" ] || missing+=("$SSHD (apt-get install openssh-server)")
	for t in ip unshare nsenter setsid flock ssh-keygen ssh-keyscan useradd usermod chpasswd visudo mount umount mountpoint; do
		command -v "$t" >/dev/null 2>&1 || missing+=("$t")
	done
	[ ${#missing[@]} = 0 ] || die "missing tools: ${missing[*]}"
}

# ---------------------------------------------------------------- bed state

BED_ENV=$TESTBED_DIR/bed.env

load_bed() {
	local want_prefix=${TESTBED_PREFIX:-}
	if [ -f "$BED_ENV" ]; then
		PREFIX=$(sed -n 's/^PREFIX=//p' "$BED_ENV")
		SUBNET=$(sed -n 's/^SUBNET=//p' "$BED_ENV")
		if [ -n "$want_prefix" ] && [ "$want_prefix" != "$PREFIX" ]; then
			die "$TESTBED_DIR belongs to the bed with prefix $PREFIX, not $want_prefix; use another TESTBED_DIR"
		fi
		if [ -n "${TESTBED_SUBNET:-}" ] && [ "$TESTBED_SUBNET" != "$SUBNET" ]; then
			die "$TESTBED_DIR belongs to the bed on $SUBNET, not $TESTBED_SUBNET; run down first or use another TESTBED_DIR"
		fi
	else
		PREFIX=${want_prefix:-dmgr}
		SUBNET=${TESTBED_SUBNET:-$(derive_subnet "$PREFIX")}
	fi
	[[ $PREFIX =~ ^[a-z][a-z0-9]{0,9}$ ]] ||
		die "TESTBED_PREFIX '$PREFIX' must match [a-z][a-z0-9]* and be at most 10 characters (interface names stay within 15)"
	[[ $SUBNET =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.0/24$ ]] ||
		die "TESTBED_SUBNET '$SUBNET' must look like A.B.C.0/24"
	local o
	for o in "${BASH_REMATCH[@]:1:3}"; do
		[ "$o" -le 255 ] || die "TESTBED_SUBNET '$SUBNET' is not an IPv4 subnet"
	done
	BASE=${SUBNET%.0/24}
	BRIDGE=$PREFIX-br
}

derive_subnet() {
	local h x
	h=$(printf '%s' "$1" | cksum | cut -d' ' -f1)
	x=$((h % 512))
	echo "198.$((18 + x / 256)).$((x % 256)).0/24"
}

host_vars() { # sets NS VETH ADDR HD HOSTNAME_ for host $1
	local i=$1
	[[ $i =~ ^[1-9][0-9]*$ ]] && [ "$i" -le "$MAX_HOSTS" ] || die "host index '$i' must be 1..$MAX_HOSTS"
	NS=$PREFIX-h$i
	VETH=$PREFIX-v$i
	ADDR=$BASE.$((10 + i))
	HD=$TESTBED_DIR/hosts/$i
	HOSTNAME_=$PREFIX-host$i
}

host_indexes() { # every host with a state directory, in order
	local d
	[ -d "$TESTBED_DIR/hosts" ] || return 0
	for d in "$TESTBED_DIR"/hosts/*/; do
		d=${d%/}
		d=${d##*/}
		if [[ $d =~ ^[0-9]+$ ]]; then echo "$d"; fi
	done | sort -n
}

need_host() {
	host_vars "$1"
	[ -f "$HD/.ready" ] || die "host $1 does not exist in $TESTBED_DIR (run: $0 up $1)"
	[ -e "/run/netns/$NS" ] || die "host $1 has no network namespace $NS (run: $0 up)"
}

# ---------------------------------------------------------------- processes

sshd_pid() { # prints the root-namespace pid of host $1's sshd if it runs
	host_vars "$1"
	local pid
	[ -f "$HD/pid" ] && [ -e "/run/netns/$NS" ] || return 1
	read -r pid <"$HD/pid" || return 1
	[ -n "$pid" ] && [ -e "/proc/$pid" ] || return 1
	# The pid belongs to this host only if it lives in the host's netns.
	[ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" = "$(stat -L -c %i "/run/netns/$NS")" ] || return 1
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = sshd ] || return 1
	echo "$pid"
}

kill_netns() { # kill every process in netns $1 until none is left
	local ns=$1 n pids
	for n in $(seq 100); do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -n "$pids" ] || return 0
		# shellcheck disable=SC2086
		kill -9 $pids 2>/dev/null || true
		sleep 0.02
	done
	note "processes still in $ns after kill: $(ip netns pids "$ns" | tr '\n' ' ')"
	return 1
}

# ---------------------------------------------------------------- inside a host

# private_mounts runs in a fresh mount namespace of host $1 and gives it its
# own tree. The bind that hides the state directory goes last, so that every
# source is still reachable when it is bound.
private_mounts() {
	host_vars "$1"
	local pairs=(/etc:etc /home:home /root:root /srv:srv /tmp:tmp /var/tmp:var_tmp /var/log:var_log)
	local last="" p target
	for p in "${pairs[@]}"; do
		target=${p%%:*}
		if [[ $TESTBED_DIR/ == "$target"/* ]]; then
			last=$p
			continue
		fi
		mount --bind "$HD/${p#*:}" "$target"
	done
	[ -z "$last" ] || mount --bind "$HD/${last#*:}" "${last%%:*}"
	# /run is a tmpfs, as on a real machine: empty after every boot.
	mount -t tmpfs -o mode=0755,size=64m,nosuid,nodev tmpfs /run
	mkdir -m 0755 /run/sshd
	mkdir -m 1777 /run/lock
	install -m 0664 -g utmp /dev/null /run/utmp 2>/dev/null || : >/run/utmp
	# Our own PID namespace needs its own /proc.
	mount -t proc -o nosuid,nodev,noexec proc /proc
	hostname "$HOSTNAME_"
	cd /
}

# _boot I: pid 1 of host I's PID namespace; becomes sshd.
cmd__boot() {
	host_vars "$1"
	local pid _
	# /proc is still the root namespace's here, so this is our pid as seen
	# from outside: the handle for exec, stop and rekey.
	read -r pid _ </proc/self/stat
	echo "$pid" >"$HD/pid"
	private_mounts "$1"
	exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		"$SSHD" -D -f /etc/ssh/sshd_config -E /var/log/sshd.log
}

# _enter I CMD…: run CMD in a fresh set of host I's namespaces (host stopped).
cmd__enter() {
	local i=$1
	shift
	private_mounts "$i"
	exec "$@"
}

# ---------------------------------------------------------------- building

make_keys() {
	local k=$TESTBED_DIR/keys
	mkdir -p "$k"
	chmod 0700 "$k"
	[ -f "$k/root_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "root@testbed-$PREFIX" -f "$k/root_ed25519"
	[ -f "$k/dmgr_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "dmgr@testbed-$PREFIX" -f "$k/dmgr_ed25519"
	if [ ! -s "$k/dmpass.password" ]; then
		(umask 077 && head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 20 >"$k/dmpass.password")
	fi
}

# make_template builds the /etc, /home and /root that every host starts from:
# the real /etc with our users, sudoers and sshd_config, without the real
# machine's host keys.
make_template() {
	local t=$TESTBED_DIR/template k=$TESTBED_DIR/keys
	[ -f "$t/.ready" ] && return 0
	rm -rf "$t"
	mkdir -p "$t/home" "$t/root"
	cp -a /etc "$t/etc"
	rm -f "$t"/etc/ssh/ssh_host_*
	rm -rf "$t/etc/ssh/sshd_config.d" "$t/etc/netns"
	mkdir -p "$t/etc/ssh/sshd_config.d"
	cat >"$t/etc/ssh/sshd_config" <<-'EOF'
		# Written by dmgr's testbed/testbed.sh.
		Port 22
		ListenAddress 0.0.0.0
		HostKey /etc/ssh/ssh_host_ed25519_key
		PidFile /run/sshd.pid
		# Without PAM sshd checks /etc/shadow itself; password login still
		# works, but an account whose hash starts with "!" (locked) cannot log
		# in at all, not even by key: key-only users get "*".
		UsePAM no
		PermitRootLogin prohibit-password
		PubkeyAuthentication yes
		AuthorizedKeysFile .ssh/authorized_keys
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		AllowTcpForwarding yes
		X11Forwarding no
		PrintMotd no
		PrintLastLog no
		UseDNS no
		# Agents open many connections and sessions at once.
		MaxStartups 200
		MaxSessions 200
		AcceptEnv LANG LC_*
		Subsystem sftp /usr/lib/openssh/sftp-server

		Match User dmpass
			PasswordAuthentication yes
	EOF
	cat >"$t/etc/sudoers.d/dmgr-testbed" <<-'EOF'
		# Written by dmgr's testbed/testbed.sh.
		dmgr ALL=(ALL:ALL) NOPASSWD: ALL
		dmpass ALL=(ALL:ALL) ALL
	EOF
	chmod 0440 "$t/etc/sudoers.d/dmgr-testbed"
	visudo -c -q -f "$t/etc/sudoers.d/dmgr-testbed" >/dev/null
	cp -a /etc/skel/. "$t/root/"
	chmod 0700 "$t/root"
	# Users are made by the real tools, in a mount namespace where the
	# template is /etc and /home.
	local pw
	pw=$(cat "$k/dmpass.password")
	unshare --mount --propagation private -- bash -euc '
		t=$1 pw=$2
		mount --bind "$t/etc" /etc
		mount --bind "$t/home" /home
		for u in dmgr dmpass; do
			getent passwd "$u" >/dev/null || useradd --create-home --shell /bin/bash "$u"
		done
		usermod -p "*" dmgr
		echo "dmpass:$pw" | chpasswd
		case "$(getent shadow root | cut -d: -f2)" in "!"*) usermod -p "*" root ;; esac
	' _ "$t" "$pw"
	install_authorized_keys "$t/root" root root "$k/root_ed25519.pub"
	local uid gid
	uid=$(awk -F: '$1 == "dmgr" {print $3}' "$t/etc/passwd")
	gid=$(awk -F: '$1 == "dmgr" {print $4}' "$t/etc/passwd")
	install_authorized_keys "$t/home/dmgr" "$uid" "$gid" "$k/dmgr_ed25519.pub"
	touch "$t/.ready"
}

install_authorized_keys() { # home owner group pubkey
	install -d -m 0700 -o "$2" -g "$3" "$1/.ssh"
	install -m 0600 -o "$2" -g "$3" "$4" "$1/.ssh/authorized_keys"
}

make_host_tree() { # the private files of host $1
	host_vars "$1"
	[ -f "$HD/.ready" ] && return 0
	local t=$TESTBED_DIR/template
	rm -rf "$HD"
	mkdir -p "$HD"
	cp -a "$t/etc" "$t/home" "$t/root" "$HD/"
	mkdir -p "$HD/srv" "$HD/var_log"
	install -d -m 1777 "$HD/tmp" "$HD/var_tmp"
	install -m 0664 -g utmp /dev/null "$HD/var_log/wtmp"
	install -m 0660 -g utmp /dev/null "$HD/var_log/btmp"
	install -m 0664 -g utmp /dev/null "$HD/var_log/lastlog"
	echo "$HOSTNAME_" >"$HD/etc/hostname"
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$HD/etc/machine-id"
	echo >>"$HD/etc/machine-id"
	ssh-keygen -q -t ed25519 -N '' -C "root@$HOSTNAME_" -f "$HD/etc/ssh/ssh_host_ed25519_key"
	touch "$HD/.ready"
}

subnet_in_use() { # an address in it, or a route to or inside it
	local addrs routes
	addrs=$(ip -4 -o addr show | awk -v b="$BASE." 'index($4, b) == 1')
	routes=$(ip -4 route show table all match "$SUBNET" | awk '$1 != "default"'
		ip -4 route show table all root "$SUBNET")
	[ -n "$addrs$routes" ]
}

make_bridge() {
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		[ -f "$BED_ENV" ] || {
			note "bridge $BRIDGE exists but $TESTBED_DIR holds no bed; run down with the TESTBED_DIR of that bed, or use another TESTBED_PREFIX"
			exit $EX_TEMPFAIL
		}
		ip -4 -o addr show dev "$BRIDGE" | grep -q " $BASE\.1/24 " ||
			die "bridge $BRIDGE exists without $BASE.1/24; run down first"
		return 0
	fi
	# Parallel beds check and claim their subnets one at a time.
	local lockdir=/run/lock
	[ -d "$lockdir" ] || lockdir=/tmp
	exec 9>"$lockdir/dmgr-testbed.lock"
	flock 9
	if subnet_in_use; then
		exec 9>&-
		note "subnet $SUBNET is already in use on this machine (ip addr / ip route); set TESTBED_SUBNET or another TESTBED_PREFIX"
		exit $EX_TEMPFAIL
	fi
	# nf_call_iptables 0: a host firewall (Docker's FORWARD DROP) must not
	# see the traffic between hosts.
	ip link add "$BRIDGE" type bridge stp_state 0 forward_delay 0 nf_call_iptables 0 nf_call_ip6tables 0 nf_call_arptables 0
	ip addr add "$BASE.1/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	exec 9>&-
}

make_host_net() {
	host_vars "$1"
	[ -e "/run/netns/$NS" ] || ip netns add "$NS"
	if ! ip link show "$VETH" >/dev/null 2>&1; then
		ip -n "$NS" link del eth0 2>/dev/null || true
		ip link add "$VETH" type veth peer name eth0 netns "$NS"
		ip link set "$VETH" master "$BRIDGE"
		ip link set "$VETH" up
	fi
	ip -n "$NS" link set lo up
	ip -n "$NS" addr replace "$ADDR/24" dev eth0
	ip -n "$NS" link set eth0 up
	ip -n "$NS" route replace default via "$BASE.1"
}

start_host() {
	host_vars "$1"
	sshd_pid "$1" >/dev/null && return 0
	host_vars "$1"
	rm -f "$HD/pid"
	# setsid: the host outlives this script and its caller's process group.
	# Its own stdio, and fd 9 (the subnet lock) closed.
	setsid ip netns exec "$NS" unshare --mount --uts --pid --fork --propagation private -- \
		"$SELF" _boot "$1" </dev/null >>"$HD/boot.log" 2>&1 9>&- &
	local bg=$! n
	for n in $(seq 250); do
		if [ -f "$HD/pid" ] && ip netns exec "$NS" bash -c 'exec 3<>/dev/tcp/127.0.0.1/22' 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$bg" 2>/dev/null; then
			die "host $1: sshd did not start: $(tail -n 20 "$HD/boot.log" "$HD/var_log/sshd.log" 2>/dev/null)"
		fi
		sleep 0.02
	done
	die "host $1: sshd does not answer on $ADDR:22 after 5s: $(tail -n 20 "$HD/boot.log" "$HD/var_log/sshd.log" 2>/dev/null)"
}

host_key() { # authorized_keys line (type and key) of host $1
	host_vars "$1"
	cut -d' ' -f1,2 "$HD/etc/ssh/ssh_host_ed25519_key.pub"
}

write_etc_hosts() { # every host knows every other by name
	local i j
	for i in $(host_indexes); do
		host_vars "$i"
		{
			grep -v -e '# testbed$' -e "[[:space:]]$HOSTNAME_\([[:space:]]\|\$\)" /etc/hosts || true
			for j in $(host_indexes); do
				echo "$BASE.$((10 + j))	$PREFIX-host$j	# testbed"
			done
		} >"$HD/etc/hosts.new"
		cat "$HD/etc/hosts.new" >"$HD/etc/hosts"
		rm -f "$HD/etc/hosts.new"
	done
}

json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

write_hosts_json() {
	local k=$TESTBED_DIR/keys i first=1 pw
	pw=$(cat "$k/dmpass.password")
	{
		echo "["
		for i in $(host_indexes); do
			host_vars "$i"
			[ $first = 1 ] || echo ","
			first=0
			printf '  {"index": %d, "name": %s, "addr": %s, "ssh_port": 22, "hostname": %s, "host_key": %s,\n' \
				"$i" "$(json_str "$NS")" "$(json_str "$ADDR")" "$(json_str "$HOSTNAME_")" "$(json_str "$(host_key "$i")")"
			printf '   "root_key": %s, "sudo_user": "dmgr", "sudo_key": %s, "password_user": "dmpass", "password": %s}' \
				"$(json_str "$k/root_ed25519")" "$(json_str "$k/dmgr_ed25519")" "$(json_str "$pw")"
		done
		echo
		echo "]"
	} >"$TESTBED_DIR/hosts.json.new"
	mv "$TESTBED_DIR/hosts.json.new" "$TESTBED_DIR/hosts.json"
	for i in $(host_indexes); do
		host_vars "$i"
		echo "$ADDR $(host_key "$i")"
	done >"$TESTBED_DIR/known_hosts"
}

# ---------------------------------------------------------------- commands

cmd_up() {
	local n=${1:-}
	[[ $n =~ ^[1-9][0-9]*$ ]] && [ "$n" -le "$MAX_HOSTS" ] || die "usage: $0 up N (N in 1..$MAX_HOSTS)"
	need_root; need_tools
	load_bed
	if [ -d "$TESTBED_DIR" ] && [ ! -f "$BED_ENV" ] && [ -n "$(ls -A "$TESTBED_DIR")" ]; then
		die "$TESTBED_DIR is not empty and holds no bed; choose another TESTBED_DIR"
	fi
	make_bridge
	mkdir -p "$TESTBED_DIR"
	if [ "${TESTBED_TMPFS:-yes}" != no ] && [ -z "$(ls -A "$TESTBED_DIR")" ] && ! mountpoint -q "$TESTBED_DIR"; then
		# Copying /etc is a thousand inodes per host: fast on tmpfs, seconds
		# on some disks. Pages are used only as files are written.
		mount -t tmpfs -o mode=0700,size=50% "testbed-$PREFIX" "$TESTBED_DIR"
	fi
	chmod 0700 "$TESTBED_DIR"
	[ -f "$BED_ENV" ] || printf 'PREFIX=%s\nSUBNET=%s\n' "$PREFIX" "$SUBNET" >"$BED_ENV"
	make_keys
	make_template
	local i
	for i in $(seq "$n"); do
		make_host_tree "$i"
		make_host_net "$i"
	done
	write_etc_hosts
	for i in $(seq "$n"); do
		start_host "$i"
	done
	write_hosts_json
	summary
}

summary() {
	local k=$TESTBED_DIR/keys i
	echo "testbed $PREFIX: $SUBNET, bridge $BRIDGE ($BASE.1), state in $TESTBED_DIR"
	for i in $(host_indexes); do
		host_vars "$i"
		printf '  host %-3s %-16s %s:22  netns %s  %s\n' "$i" "$HOSTNAME_" "$ADDR" "$NS" "$(host_state "$i")"
	done
	echo "users on every host:"
	echo "  root    key $k/root_ed25519"
	echo "  dmgr    key $k/dmgr_ed25519  (sudo without password)"
	echo "  dmpass  password $(cat "$k/dmpass.password")  (sudo with password)"
	host_vars 1
	echo "try: ssh -i $k/root_ed25519 -o UserKnownHostsFile=$TESTBED_DIR/known_hosts root@$ADDR"
	echo "machine-readable: $TESTBED_DIR/hosts.json"
}

host_state() {
	host_vars "$1"
	local s pid
	if pid=$(sshd_pid "$1"); then s="running (sshd pid $pid)"; else s="stopped"; fi
	host_vars "$1"
	case $(ip -o link show "$VETH" 2>/dev/null) in *"state DOWN"*) s="$s, cut off" ;; esac
	echo "$s"
}

cmd_down() {
	need_root
	local prefix=${TESTBED_PREFIX:-}
	if [ -f "$BED_ENV" ]; then
		prefix=$(sed -n 's/^PREFIX=//p' "$BED_ENV")
	elif [ -z "$prefix" ] && [ "$TESTBED_DIR" = /tmp/dmgr-testbed ]; then
		prefix=dmgr
	elif [ -z "$prefix" ]; then
		# Guessing would tear down somebody else's bed.
		die "$TESTBED_DIR holds no bed.env: set TESTBED_PREFIX to the prefix of the bed to tear down"
	fi
	[[ $prefix =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "bad prefix '$prefix'"
	local ns link m rc=0
	for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-h[0-9]+$" || true); do
		kill_netns "$ns" || rc=1
		ip netns del "$ns" || rc=1
	done
	for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^$prefix-(v[0-9]+|br)$" || true); do
		ip link del "$link" 2>/dev/null || true
	done
	# Nothing of ours is mounted in the root namespace, but if something is,
	# it must go before the directory does.
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" || rc=1
	done < <(awk -v d="$TESTBED_DIR/" 'index($2 "/", d) == 1 {print $2}' /proc/self/mounts | sort -r)
	if [ -d "$TESTBED_DIR" ]; then
		if [ -f "$BED_ENV" ] || [ -z "$(ls -A "$TESTBED_DIR")" ]; then
			rm -rf "$TESTBED_DIR"
		else
			note "left $TESTBED_DIR alone: it holds no bed.env"
		fi
	fi
	return $rc
}

cmd_stop() {
	need_root
	load_bed
	need_host "${1:-}"
	kill_netns "$NS"
	rm -f "$HD/pid"
}

cmd_start() {
	need_root; need_tools
	load_bed
	need_host "${1:-}"
	start_host "$1"
}

cmd_cut() {
	need_root
	load_bed
	need_host "${1:-}"
	ip link set "$VETH" down
}

cmd_restore() {
	need_root
	load_bed
	need_host "${1:-}"
	ip link set "$VETH" up
	# Whoever tried to reach the host while it was cut holds a FAILED
	# neighbour entry and would get "no route to host" for a while: forget
	# them, as if the cable had been plugged back in long ago.
	local ns
	ip neigh flush to "$ADDR" dev "$BRIDGE" 2>/dev/null || true
	ip -n "$NS" neigh flush all 2>/dev/null || true
	for ns in $(ip netns list | awk '{print $1}' | grep -E "^$PREFIX-h[0-9]+$" || true); do
		ip -n "$ns" neigh flush to "$ADDR" 2>/dev/null || true
	done
}

cmd_rekey() {
	need_root; need_tools
	load_bed
	need_host "${1:-}"
	local key="$HD/etc/ssh/ssh_host_ed25519_key" pid new n
	rm -f "$key" "$key.pub"
	ssh-keygen -q -t ed25519 -N '' -C "root@$HOSTNAME_" -f "$key"
	new=$(host_key "$1")
	if pid=$(sshd_pid "$1"); then
		host_vars "$1"
		kill -HUP "$pid" # sshd re-executes itself and reads the new key
		for n in $(seq 250); do
			case $(ip netns exec "$NS" ssh-keyscan -T 1 -t ed25519 127.0.0.1 2>/dev/null) in
			*"$new"*) break ;;
			esac
			[ "$n" -lt 250 ] || die "host $1: sshd did not take the new key"
			sleep 0.02
		done
	fi
	write_hosts_json
	echo "$new"
}

cmd_exec() {
	need_root
	load_bed
	need_host "${1:-}"
	local i=$1 pid
	shift
	[ $# -gt 0 ] || die "usage: $0 exec I CMD [ARG...]"
	if pid=$(sshd_pid "$i"); then
		exec nsenter -t "$pid" -n -m -u -p -- "$@"
	fi
	host_vars "$i"
	exec ip netns exec "$NS" unshare --mount --uts --pid --fork --propagation private -- "$SELF" _enter "$i" "$@"
}

cmd_status() {
	need_root
	load_bed
	if [ ! -f "$BED_ENV" ]; then
		echo "testbed $PREFIX: no bed in $TESTBED_DIR"
		return 0
	fi
	summary
}

usage() {
	sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
	ARGS=("$@")
	local cmd=${1:-}
	[ $# = 0 ] || shift
	case $cmd in
	up | down | stop | start | cut | restore | rekey | exec | status) "cmd_$cmd" "$@" ;;
	_boot | _enter)
		load_bed
		"cmd_$cmd" "$@"
		;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
