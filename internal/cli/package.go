package cli

import "github.com/spf13/cobra"

// addPackageCommands: TODO(admin helper) — placeholder until the commands land.
func (a *App) addPackageCommands(root *cobra.Command) {}
