package cli

import "github.com/spf13/cobra"

// addOperationCommands: TODO(cli helper) — placeholder until the commands land.
func (a *App) addOperationCommands(root *cobra.Command) {}
