package cli

import (
	"context"
	"fmt"
	"strings"
)

// confirm asks question on stderr and reads y/yes from stdin; yes (the
// --yes flag) answers for the user. Without a terminal to ask on, a
// command that changes a cluster needs --yes.
func (a *App) confirm(yes bool, question string) error {
	if yes {
		return nil
	}
	if !isTerminal(a.Stdin) {
		return usageError("%s: stdin is not a terminal to ask on; pass --yes to go ahead", strings.TrimSuffix(question, "?"))
	}
	fmt.Fprintf(a.Stderr, "%s [y/N]: ", question)
	ctx := a.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := readLine(a.Stdin, 1024)
		ch <- answer{line, err}
	}()
	var line string
	select {
	case <-ctx.Done():
		fmt.Fprintln(a.Stderr)
		return ctx.Err()
	case ans := <-ch:
		if ans.err != nil {
			return fmt.Errorf("read the answer: %w", ans.err)
		}
		line = ans.line
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &ExitError{Code: 1, Err: fmt.Errorf("cancelled: nothing was changed")}
}
