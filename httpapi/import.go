package httpapi

import (
	"net/http"

	"github.com/dmgr/dmgr/internal/service"
)

// importClusterBody takes over a cluster that tiup-dm manages: the
// cluster's name in dmgr, the text of tiup-dm's
// ~/.tiup/storage/dm/clusters/<name>/meta.yaml and of its ssh/id_rsa.
type importClusterBody struct {
	Name             string            `json:"name"`
	Meta             string            `json:"meta"`
	SSHKey           string            `json:"ssh_key"`
	SSHKeyPassphrase string            `json:"ssh_key_passphrase"`
	Group            string            `json:"group"`
	Labels           map[string]string `json:"labels"`
	ServiceManager   string            `json:"service_manager"`
}

// importCluster answers POST /api/v1/clusters/import: 202 with the import
// operation (or its approval request), or ?dry_run=true's plan. The
// service checks the permission (operator in the target group) and the
// group's approval policy, as for a deploy.
func (a *api) importCluster(w http.ResponseWriter, r *http.Request) {
	var b importClusterBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"name", b.Name}, [2]string{"meta", b.Meta}, [2]string{"ssh_key", b.SSHKey}); err != nil {
		writeError(w, r, err)
		return
	}
	req := service.ImportClusterRequest{Name: b.Name, Meta: b.Meta, SSHKey: b.SSHKey, SSHKeyPassphrase: b.SSHKeyPassphrase,
		Group: b.Group, Labels: b.Labels, ServiceManager: b.ServiceManager}
	a.command(w, r, service.ClusterCommand{Kind: "import", Cluster: b.Name, Import: &req})
}
