package cli

import "github.com/spf13/cobra"

// addCompletionCommand: TODO(cli helper) — placeholder until the commands land.
func (a *App) addCompletionCommand(root *cobra.Command) {}
