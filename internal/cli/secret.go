package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/term"
)

// maxSecret bounds a password or passphrase read from stdin.
const maxSecret = 4096

// readSecret reads a password: from stdin (one line) when fromStdin,
// else from the terminal without echo, after prompt on stderr. hint
// says how to pass it without a terminal. Ctrl-C (ctx) ends the wait and
// gives the terminal its echo back.
func (a *App) readSecret(ctx context.Context, prompt string, fromStdin bool, hint string) (string, error) {
	if fromStdin {
		s, err := readLine(a.Stdin, maxSecret)
		if err != nil {
			return "", fmt.Errorf("read the secret from stdin: %w", err)
		}
		if s == "" {
			return "", usageError("stdin held no secret (an empty first line)")
		}
		return s, nil
	}
	fd, ok := a.Stdin.(interface{ Fd() uintptr })
	if !ok || !term.IsTerminal(int(fd.Fd())) {
		return "", usageError("stdin is not a terminal to ask on: %s", hint)
	}
	fmt.Fprint(a.Stderr, prompt)
	state, err := term.GetState(int(fd.Fd()))
	if err != nil {
		return "", fmt.Errorf("read the secret: %w", err)
	}
	type answer struct {
		b   []byte
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		b, err := term.ReadPassword(int(fd.Fd()))
		ch <- answer{b, err}
	}()
	select {
	case <-ctx.Done():
		_ = term.Restore(int(fd.Fd()), state)
		fmt.Fprintln(a.Stderr)
		return "", ctx.Err()
	case ans := <-ch:
		fmt.Fprintln(a.Stderr)
		if ans.err != nil {
			return "", fmt.Errorf("read the secret: %w", ans.err)
		}
		if len(ans.b) == 0 {
			return "", usageError("no secret was typed")
		}
		return string(ans.b), nil
	}
}

// readLine reads one line of r, byte by byte so that nothing after it is
// consumed, without its "\n" or "\r\n"; the end of r ends it too.
func readLine(r io.Reader, max int) (string, error) {
	var b strings.Builder
	var c [1]byte
	for {
		n, err := r.Read(c[:])
		if n == 1 {
			if c[0] == '\n' {
				break
			}
			if b.Len() >= max {
				return "", fmt.Errorf("the line is longer than %d bytes", max)
			}
			b.WriteByte(c[0])
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(b.String(), "\r"), nil
}
