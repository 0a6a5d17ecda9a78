package remote

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	for _, tc := range []struct {
		n      int
		writes []string
		want   string
	}{
		{4, nil, ""},
		{4, []string{"ab"}, "ab"},
		{4, []string{"ab", "cd"}, "abcd"},
		{4, []string{"ab", "cd", "e"}, "bcde"},
		{4, []string{"abcdefgh"}, "efgh"},
		{4, []string{"x", "abcdefgh", "i"}, "fghi"},
		{4, []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}, "ghij"},
		{3, []string{"aé", "b"}, "éb"}, // é is 2 bytes: nothing cut
		{2, []string{"aé", "b"}, "b"},  // é cut in half: its tail byte dropped
		{4, []string{"€€"}, "€"},       // 6 bytes, last 4 start mid-rune
		{1, []string{"hello", "", "!"}, "!"},
	} {
		b := newTail(tc.n)
		for _, w := range tc.writes {
			if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("write %q: %d %v", w, n, err)
			}
		}
		if got := b.String(); got != tc.want {
			t.Errorf("tail %d of %q = %q, want %q", tc.n, tc.writes, got, tc.want)
		}
		if len(b.buf) > 2*tc.n {
			t.Errorf("tail %d holds %d bytes", tc.n, len(b.buf))
		}
	}
}

func TestSudoWrap(t *testing.T) {
	root := Target{User: "root"}
	tidb := Target{User: "tidb", PrivateKey: []byte("k")}
	tidbPw := Target{User: "tidb", Password: "it's secret"}
	for _, tc := range []struct {
		t      Target
		sudo   bool
		as     string
		want   string
		prefix bool
	}{
		{root, false, "", "id", false},
		{root, true, "", "id", false},
		{root, true, "root", "id", false},
		{root, false, "tidb", "sudo -n -u tidb -- sh -c id", false},
		{tidb, false, "", "id", false},
		{tidb, true, "", "sudo -n -- sh -c id", false},
		{tidb, false, "nobody", "sudo -n -u nobody -- sh -c id", false},
		{tidb, false, "it's me", `sudo -n -u 'it'\''s me' -- sh -c id`, false},
		{tidbPw, true, "", "sudo -S -p '' -- sh -c ", true},
	} {
		line, prefix, err := sudoWrap(tc.t, "id", tc.sudo, tc.as)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, tc.want) || !tc.prefix && line != tc.want {
			t.Errorf("%s sudo=%v as=%q: %s, want %s", tc.t.User, tc.sudo, tc.as, line, tc.want)
		}
		if strings.Contains(line, "secret") {
			t.Errorf("the password is in the command line: %s", line)
		}
		if (prefix != "") != tc.prefix || tc.prefix && !strings.HasPrefix(prefix, "it's secret\ndmgr-stdin-") {
			t.Errorf("stdin prefix %q", prefix)
		}
	}
	if _, _, err := sudoWrap(Target{User: "x", Password: "a\nb"}, "id", true, ""); err == nil || strings.Contains(err.Error(), "a\nb") {
		t.Errorf("password with a newline: %v", err)
	}
}

func TestPGIDFilter(t *testing.T) {
	for _, tc := range []struct {
		writes []string
		pgid   int
		out    string
	}{
		{[]string{"dmgr-pgid=123\n", "err\n"}, 123, "err\n"},
		{[]string{"dmgr-pg", "id=4", "5\nrest"}, 45, "rest"},
		{[]string{"bashrc noise\ndmgr-pgid=7\nerr"}, 7, "bashrc noise\nerr"},
		{[]string{"syntax error\n"}, 0, "syntax error\n"},
		{[]string{"no newline"}, 0, "no newline"},
		{[]string{"dmgr-pgid=x\n"}, 0, "dmgr-pgid=x\n"},
		{[]string{strings.Repeat("y", 5000), "\ndmgr-pgid=9\n"}, 0, strings.Repeat("y", 5000) + "\ndmgr-pgid=9\n"},
	} {
		out := newTail(1 << 20)
		f := newPGIDFilter(out)
		for _, w := range tc.writes {
			f.Write([]byte(w))
		}
		f.flush()
		if got := f.wait(0); got != tc.pgid || out.String() != tc.out {
			t.Errorf("%q: pgid %d, stderr %q; want %d, %q", tc.writes, got, out.String(), tc.pgid, tc.out)
		}
	}
}
