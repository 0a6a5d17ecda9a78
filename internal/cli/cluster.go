package cli

import "github.com/spf13/cobra"

// addClusterCommands: TODO(cli helper) — placeholder until the commands land.
func (a *App) addClusterCommands(root *cobra.Command) {}
