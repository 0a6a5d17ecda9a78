package password

import (
	"errors"
	"strings"
	"testing"
)

func TestHashVerifiesItsPasswordOnly(t *testing.T) {
	h, err := Hash("correct horse battery staple", Default)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not carry the default parameters", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("the hash contains the password")
	}
	for pw, want := range map[string]bool{"correct horse battery staple": true, "correct horse battery stapl": false, "": false} {
		ok, err := Verify(h, pw)
		if err != nil || ok != want {
			t.Errorf("Verify(%q) = %v, %v; want %v", pw, ok, err, want)
		}
	}
	h2, _ := Hash("correct horse battery staple", Default)
	if h2 == h {
		t.Error("two hashes of one password are equal: the salt is not random")
	}
}

func TestVerifyKeepsOlderParameters(t *testing.T) {
	weak := Params{Memory: 8 * 1024, Time: 1, Threads: 2, SaltLen: 16, KeyLen: 32}
	h, _ := Hash("pw-of-2025", weak)
	if ok, err := Verify(h, "pw-of-2025"); !ok || err != nil {
		t.Fatalf("Verify with the hash's own parameters = %v, %v", ok, err)
	}
}

func TestVerifyRefusesMalformedAndCostlyHashes(t *testing.T) {
	for _, h := range []string{
		"", "plain", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=18$m=19456,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=19456,t=1000,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$m=19456,t=2,p=1$!!$a2V5a2V5a2V5a2V5a2V5a2V5",
	} {
		if _, err := Verify(h, "x"); !errors.Is(err, ErrMalformed) {
			t.Errorf("Verify(%q) error = %v, want ErrMalformed", h, err)
		}
	}
}

// BenchmarkVerify is the cost of one login's password check with the
// default parameters.
func BenchmarkVerify(b *testing.B) {
	h, _ := Hash("correct horse battery staple", Default)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := Verify(h, "correct horse battery staple"); !ok {
			b.Fatal("no match")
		}
	}
}
