package cli

import "github.com/spf13/cobra"

// addPeopleCommands: TODO(admin helper) — placeholder until the commands land.
func (a *App) addPeopleCommands(root *cobra.Command) {}
