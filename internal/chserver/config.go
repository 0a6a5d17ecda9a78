package chserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// layout names the files and directories of one server under its Dir.
type layout struct {
	Dir        string // absolute
	Config     string // Dir/config.xml
	Users      string // Dir/users.xml
	Metrika    string // Dir/metrika.xml: empty substitutions file
	Data       string // Dir/data/ (ClickHouse wants the trailing slash)
	Tmp        string // Dir/data/tmp/
	UserFiles  string // Dir/data/user_files/
	FormatSch  string // Dir/data/format_schemas/
	LogDir     string // Dir/log/
	Log        string // Dir/log/server.log
	ErrLog     string // Dir/log/server.err.log
	ConsoleLog string // Dir/log/console.log: the process's stdout and stderr
	StatusFile string // Dir/data/status: locked by a running server
}

func newLayout(dir string) layout {
	sub := func(p ...string) string { return filepath.Join(append([]string{dir}, p...)...) }
	return layout{
		Dir:        dir,
		Config:     sub("config.xml"),
		Users:      sub("users.xml"),
		Metrika:    sub("metrika.xml"),
		Data:       sub("data") + "/",
		Tmp:        sub("data", "tmp") + "/",
		UserFiles:  sub("data", "user_files") + "/",
		FormatSch:  sub("data", "format_schemas") + "/",
		LogDir:     sub("log"),
		Log:        sub("log", "server.log"),
		ErrLog:     sub("log", "server.err.log"),
		ConsoleLog: sub("log", "console.log"),
		StatusFile: sub("data", "status"),
	}
}

// configXML is a complete server config: nothing is taken from
// /etc/clickhouse-server. Every path the 18.16 server would otherwise put
// under /var/lib/clickhouse or look up in /etc is set here:
//   - path, tmp_path, user_files_path, format_schema_path: the data dir;
//     preprocessed_configs/ then goes there too.
//   - include_from: defaults to /etc/metrika.xml; pointed at an empty
//     substitutions file in Dir (18.16 refuses to start when an explicit
//     include_from file is missing).
//   - users_config: our users.xml.
//   - listen_host: 127.0.0.1 only. Without it 18.16 also listens on ::1 and
//     turns on listen_try, so a busy port is only logged, not fatal.
//   - no interserver_http_port: the Debian config sets 9009, which makes
//     every second server on a machine log "Address already in use".
//   - timezone: UTC, so DateTime conversions do not depend on the host.
const configXML = `<?xml version="1.0"?>
<!-- Written by dmgr chserver on every start; edits are overwritten. -->
<yandex>
    <logger>
        <level>information</level>
        <log>{{x .L.Log}}</log>
        <errorlog>{{x .L.ErrLog}}</errorlog>
        <size>50M</size>
        <count>3</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{{.TCPPort}}</tcp_port>
    <http_port>{{.HTTPPort}}</http_port>
    <path>{{x .L.Data}}</path>
    <tmp_path>{{x .L.Tmp}}</tmp_path>
    <user_files_path>{{x .L.UserFiles}}</user_files_path>
    <format_schema_path>{{x .L.FormatSch}}</format_schema_path>
    <include_from>{{x .L.Metrika}}</include_from>
    <users_config>{{x .L.Users}}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <umask>027</umask>
    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <mark_cache_size>268435456</mark_cache_size>
    <mlock_executable>false</mlock_executable>
</yandex>
`

// usersXML has one user, "dmgr" (User), that logs in with a password
// whose SHA-256 is written here (18.16 reads password_sha256_hex), from
// loopback only (the server listens on 127.0.0.1 anyway). There is no
// "default" user: a login without a user name or as "default" is refused
// ("Unknown user default"), so nobody gets in without the password. It
// names include_from too: the users file is preprocessed on its own and
// would otherwise look for /etc/metrika.xml.
const usersXML = `<?xml version="1.0"?>
<!-- Written by dmgr chserver on every start; edits are overwritten. -->
<yandex>
    <include_from>{{x .L.Metrika}}</include_from>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
            <!-- How often an idle native connection checks for shutdown
                 (default 10 s, which makes Stop wait 10 s for every
                 client that keeps a pooled connection open). -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <{{.User}}>
            <password_sha256_hex>{{.PasswordSHA256}}</password_sha256_hex>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </{{.User}}>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
`

// metrikaXML is the include_from file: no substitutions.
const metrikaXML = `<?xml version="1.0"?>
<yandex></yandex>
`

var tmplFuncs = template.FuncMap{
	"x": func(s string) (string, error) {
		var b bytes.Buffer
		if err := xml.EscapeText(&b, []byte(s)); err != nil {
			return "", err
		}
		return b.String(), nil
	},
}

var (
	configTmpl  = template.Must(template.New("config.xml").Funcs(tmplFuncs).Parse(configXML))
	usersTmpl   = template.Must(template.New("users.xml").Funcs(tmplFuncs).Parse(usersXML))
	metrikaTmpl = template.Must(template.New("metrika.xml").Parse(metrikaXML))
)

// writeConfig creates the directories of l and writes config.xml and
// users.xml for the given ports and the password of User.
func writeConfig(l layout, tcpPort, httpPort int, password string) error {
	for _, d := range []string{l.Dir, l.Data, l.Tmp, l.UserFiles, l.FormatSch, l.LogDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	sum := sha256.Sum256([]byte(password))
	data := struct {
		L                    layout
		TCPPort, HTTPPort    int
		User, PasswordSHA256 string
	}{l, tcpPort, httpPort, User, hex.EncodeToString(sum[:])}
	for _, f := range []struct {
		path string
		tmpl *template.Template
	}{{l.Config, configTmpl}, {l.Users, usersTmpl}, {l.Metrika, metrikaTmpl}} {
		var b bytes.Buffer
		if err := f.tmpl.Execute(&b, data); err != nil {
			return fmt.Errorf("render %s: %w", f.path, err)
		}
		// 0600: users.xml holds the password's hash.
		if err := writeFile(f.path, b.Bytes(), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return nil
}

// writeFile writes b to path with mode perm, also when path exists with a
// wider mode (os.WriteFile keeps an existing file's mode): the mode is
// narrowed before the new content is written.
func writeFile(path string, b []byte, perm os.FileMode) error {
	if err := os.Chmod(path, perm); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.WriteFile(path, b, perm)
}
