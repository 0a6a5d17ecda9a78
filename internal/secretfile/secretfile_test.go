package secretfile

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestCreateWritesOnceWithMode0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	created, err := Create(path, []byte("first\n"))
	if err != nil || !created {
		t.Fatalf("first Create: %v %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v, want 0600", fi, err)
	}
	created, err = Create(path, []byte("second\n"))
	if err != nil || created {
		t.Fatalf("second Create: %v %v, want the file kept", created, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first\n" {
		t.Fatalf("content %q, want the first", b)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want the file alone", len(ents))
	}
}

// Racing writers agree on one file: exactly one of them writes it, and
// the content is one writer's whole body.
func TestCreateRacingWritersAgreeOnOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seed")
	var wg sync.WaitGroup
	wrote := make(chan string, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := string(rune('a'+i)) + "-body"
			if created, err := Create(path, []byte(body)); err != nil {
				t.Error(err)
			} else if created {
				wrote <- body
			}
		}()
	}
	wg.Wait()
	close(wrote)
	var winners []string
	for b := range wrote {
		winners = append(winners, b)
	}
	b, _ := os.ReadFile(path)
	if len(winners) != 1 || string(b) != winners[0] {
		t.Fatalf("winners %v, file %q", winners, b)
	}
}

func TestCreateInAMissingDirectoryFails(t *testing.T) {
	if _, err := Create(filepath.Join(t.TempDir(), "no", "key"), []byte("x")); err == nil {
		t.Fatal("Create in a missing directory succeeded")
	}
}
