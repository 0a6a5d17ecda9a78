package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummaryCountsAndNamesEverySkipAndFailure(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: SKIP: needs root (run as root; CI does)\n"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:3: want 1, got 2\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestC","Elapsed":0.5}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t0.6s\n"}`,
		`# p [p.test]`,
		`{"Action":"fail","Package":"p"}`,
	}, "\n")
	var out bytes.Buffer
	s := newSummary(&out)
	if err := s.read(strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	s.finish()
	got := out.String()
	for _, want := range []string{
		"--- FAIL: TestC (p, 0.5s)\n    c_test.go:3: want 1, got 2\n",
		"FAIL\tp\t0.6s",
		"# p [p.test]",
		"skipped tests (1):\n  p TestB: b_test.go:9: SKIP: needs root (run as root; CI does)",
		"failed tests (1):\n  p TestC",
		"\n1 passed, 1 failed, 1 skipped\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q; it is:\n%s", want, got)
		}
	}
	if strings.Contains(got, "=== RUN") {
		t.Errorf("a passed test's output was printed:\n%s", got)
	}
}
