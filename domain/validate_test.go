package domain

import (
	"strings"
	"testing"
)

// validatorCase is one value a validator must accept (want == "") or refuse
// with exactly the message want.
type validatorCase struct {
	in   string
	want string
}

func checkValidator(t *testing.T, name string, validate func(string) error, cases []validatorCase) {
	t.Helper()
	for _, c := range cases {
		err := validate(c.in)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s(%q) = %v, want nil", name, c.in, err)
		case c.want != "" && err == nil:
			t.Errorf("%s(%q) = nil, want %q", name, c.in, c.want)
		case c.want != "" && err.Error() != c.want:
			t.Errorf("%s(%q) =\n %s\nwant\n %s", name, c.in, err, c.want)
		case err != nil && ErrorCode(err) != Invalid:
			t.Errorf("%s(%q) code = %s, want %s", name, c.in, ErrorCode(err), Invalid)
		}
	}
}

func TestValidateClusterName(t *testing.T) {
	const bad = "is invalid: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
	checkValidator(t, "ValidateClusterName", ValidateClusterName, []validatorCase{
		{"prod-a", ""},
		{"a", ""},
		{"DM_1.v2", ""},
		{"9lives", ""},
		{strings.Repeat("a", 64), ""},
		{strings.Repeat("a", 65), `cluster name "` + strings.Repeat("a", 65) + `" ` + bad},
		{"", `cluster name "" ` + bad},
		{"-a", `cluster name "-a" ` + bad},
		{".a", `cluster name ".a" ` + bad},
		{"a b", `cluster name "a b" ` + bad},
		{"a/b", `cluster name "a/b" ` + bad},
		{"a;b", `cluster name "a;b" ` + bad},
		{"a\n", `cluster name "a\n" ` + bad},
		{"naïve", `cluster name "naïve" ` + bad},
	})
}

func TestValidateHost(t *testing.T) {
	const use = "use an IPv4 or IPv6 address or a host name of letters, digits, '-' and '.'"
	checkValidator(t, "ValidateHost", ValidateHost, []validatorCase{
		{"198.18.0.11", ""},
		{"::1", ""},
		{"fd00::11", ""},
		{"2001:db8::8a2e:370:7334", ""},
		{"::ffff:10.0.0.1", ""},
		{"localhost", ""},
		{"dm-1.example.com", ""},
		{"DM1.Example.COM", ""},
		{"a1", ""},
		{"1a", ""},
		{strings.Repeat("a", 63) + ".com", ""},
		{"", "host is empty: " + use},
		{strings.Repeat("a", 64) + ".com", `host "` + strings.Repeat("a", 64) + `.com" is invalid: ` + use},
		{strings.Repeat("a.", 127) + "ab", `host "` + strings.Repeat("a.", 127) + `ab" is invalid: it is longer than 253 characters`},
		{"256.1.1.1", `host "256.1.1.1" is invalid: it is not a valid IP address; ` + use},
		{"10.0.0", `host "10.0.0" is invalid: it is not a valid IP address; ` + use},
		{"fe80::1%eth0", `host "fe80::1%eth0" is invalid: IPv6 zones are not supported; ` + use},
		{"[::1]", `host "[::1]" is invalid: ` + use},
		{"10.0.0.1:22", `host "10.0.0.1:22" is invalid: ` + use},
		{"-a.com", `host "-a.com" is invalid: ` + use},
		{"a-.com", `host "a-.com" is invalid: ` + use},
		{"a..com", `host "a..com" is invalid: ` + use},
		{"a.com.", `host "a.com." is invalid: ` + use},
		{"a_b", `host "a_b" is invalid: ` + use},
		{"a b", `host "a b" is invalid: ` + use},
		{"a;reboot", `host "a;reboot" is invalid: ` + use},
		{"$(reboot)", `host "$(reboot)" is invalid: ` + use},
		{"`id`", "host \"`id`\" is invalid: " + use},
		{"a'b", `host "a'b" is invalid: ` + use},
		{"a\"b", `host "a\"b" is invalid: ` + use},
		{"a\nb", `host "a\nb" is invalid: ` + use},
		{"-oProxyCommand=x", `host "-oProxyCommand=x" is invalid: ` + use},
		{"user@host", `host "user@host" is invalid: ` + use},
	})
}

func TestValidateUser(t *testing.T) {
	const use = "is invalid: use a login name of up to 32 lower-case letters, digits, '_' or '-', starting with a letter or '_'"
	checkValidator(t, "ValidateUser", ValidateUser, []validatorCase{
		{"tidb", ""},
		{"_dm", ""},
		{"dm-admin_2", ""},
		{"root", ""},
		{strings.Repeat("a", 32), ""},
		{strings.Repeat("a", 33), `user "` + strings.Repeat("a", 33) + `" ` + use},
		{"", `user "" ` + use},
		{"Tidb", `user "Tidb" ` + use},
		{"1dm", `user "1dm" ` + use},
		{"-dm", `user "-dm" ` + use},
		{"dm.admin", `user "dm.admin" ` + use},
		{"dm;id", `user "dm;id" ` + use},
		{"dm admin", `user "dm admin" ` + use},
		{"dm$", `user "dm$" ` + use},
	})
}

func TestValidatePort(t *testing.T) {
	for _, p := range []int{1, 22, 8261, 65535} {
		if err := ValidatePort(p); err != nil {
			t.Errorf("ValidatePort(%d) = %v", p, err)
		}
	}
	for _, p := range []int{-1, 0, 65536, 1 << 40} {
		err := ValidatePort(p)
		want := "port " + itoa(p) + " is out of range: use 1-65535"
		if err == nil || err.Error() != want || ErrorCode(err) != Invalid {
			t.Errorf("ValidatePort(%d) = %v, want %q", p, err, want)
		}
	}
}

func TestValidateRemotePath(t *testing.T) {
	const chars = "; use only letters, digits and . _ / + @ -"
	checkValidator(t, "ValidateRemotePath", ValidateRemotePath, []validatorCase{
		{"/dm/deploy/dm-master-8261", ""},
		{"/home/tidb/deploy", ""},
		{"/data/dm_1.2/a+b@c", ""},
		{"/", ""},
		{"/a/.b/..c/c..", ""},
		{"", `path "" is invalid: it is empty`},
		{"dm/deploy", `path "dm/deploy" is invalid: it must be absolute (start with /)`},
		{"./dm", `path "./dm" is invalid: it must be absolute (start with /)`},
		{"/dm/../etc", `path "/dm/../etc" is invalid: it contains a ".." segment`},
		{"/..", `path "/.." is invalid: it contains a ".." segment`},
		{"/dm/..", `path "/dm/.." is invalid: it contains a ".." segment`},
		{"/dm/", `path "/dm/" is invalid: it is not clean; write it as /dm`},
		{"/dm//x", `path "/dm//x" is invalid: it is not clean; write it as /dm/x`},
		{"/dm/./x", `path "/dm/./x" is invalid: it is not clean; write it as /dm/x`},
		{"/x; rm -rf /", `path "/x; rm -rf /" is invalid: it contains ';'` + chars},
		{"/dm/$(reboot)", `path "/dm/$(reboot)" is invalid: it contains '$'` + chars},
		{"/dm/(x)", `path "/dm/(x)" is invalid: it contains '('` + chars},
		{"/dm/`id`", "path \"/dm/`id`\" is invalid: it contains '`'" + chars},
		{"/dm/it's", `path "/dm/it's" is invalid: it contains '\''` + chars},
		{`/dm/"x"`, `path "/dm/\"x\"" is invalid: it contains '"'` + chars},
		{`/dm/a\b`, `path "/dm/a\\b" is invalid: it contains '\\'` + chars},
		{"/dm/a\nreboot", `path "/dm/a\nreboot" is invalid: it contains a newline` + chars},
		{"/dm/a\tb", `path "/dm/a\tb" is invalid: it contains a tab` + chars},
		{"/dm/a b", `path "/dm/a b" is invalid: it contains a space` + chars},
		{"/dm/*", `path "/dm/*" is invalid: it contains '*'` + chars},
		{"/dm/?", `path "/dm/?" is invalid: it contains '?'` + chars},
		{"~/dm", `path "~/dm" is invalid: it contains '~'` + chars},
		{"/dm|x", `path "/dm|x" is invalid: it contains '|'` + chars},
		{"/dm&x", `path "/dm&x" is invalid: it contains '&'` + chars},
		{"/dm<x>", `path "/dm<x>" is invalid: it contains '<'` + chars},
		{"/dm/é", `path "/dm/é" is invalid: it contains 'é'` + chars},
		{"/" + strings.Repeat("a", 1024), `path "/` + strings.Repeat("a", 1024) + `" is invalid: it is longer than 1024 characters`},
	})
}
