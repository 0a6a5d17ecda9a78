package cli

import "github.com/spf13/cobra"

// addAuditCommand: TODO(admin helper) — placeholder until the commands land.
func (a *App) addAuditCommand(root *cobra.Command) {}
