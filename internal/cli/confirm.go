package cli

import (
	"bufio"
	"fmt"
	"io"
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
	line, err := bufio.NewReader(a.Stdin).ReadString('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("read the answer: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &ExitError{Code: 1, Err: fmt.Errorf("cancelled: nothing was changed")}
}
