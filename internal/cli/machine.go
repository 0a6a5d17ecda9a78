package cli

import "github.com/spf13/cobra"

// addMachineCommands: TODO(admin helper) — placeholder until the commands land.
func (a *App) addMachineCommands(root *cobra.Command) {}
