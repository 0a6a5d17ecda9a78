package cli

import "github.com/spf13/cobra"

// addSessionCommands: TODO(cli helper) — placeholder until the commands land.
func (a *App) addSessionCommands(root *cobra.Command) {}
