package httpapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

type registerMachineBody struct {
	Host       string `json:"host"`
	SSHPort    int    `json:"ssh_port"`
	User       string `json:"user"`
	Password   string `json:"password"`
	PrivateKey string `json:"private_key"`
	// PrivateKeyPassphrase decrypts an encrypted private_key; it is used
	// once, at registration, and never stored.
	PrivateKeyPassphrase string        `json:"private_key_passphrase"`
	Labels               domain.Labels `json:"labels"`
	HostKey              string        `json:"host_key"`
	Group                string        `json:"group"`
}

func (a *api) registerMachine(w http.ResponseWriter, r *http.Request) {
	var b registerMachineBody
	if err := decodeJSON(r, a.maxJSON, &b); err != nil {
		writeError(w, r, err)
		return
	}
	if err := required([2]string{"host", b.Host}, [2]string{"user", b.User}); err != nil {
		writeError(w, r, err)
		return
	}
	acc, err := a.svc.RegisterMachine(r.Context(), meta(r), service.RegisterMachineRequest{
		Host: b.Host, SSHPort: b.SSHPort, User: b.User, Password: b.Password, PrivateKey: b.PrivateKey,
		PrivateKeyPassphrase: b.PrivateKeyPassphrase, Labels: b.Labels, HostKey: b.HostKey, Group: b.Group})
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) removeMachine(w http.ResponseWriter, r *http.Request) {
	acc, err := a.svc.RemoveMachine(r.Context(), meta(r), chi.URLParam(r, "host"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) listMachines(w http.ResponseWriter, r *http.Request) {
	ms, err := a.svc.Machines(r.Context())
	host := func(m domain.Machine) string { return m.Host }
	groups := visible(r)
	answerList(w, r, ms, err, host, host, func(q projections.ListQuery) func(domain.Machine) bool {
		kept := machineKept(q)
		return func(m domain.Machine) bool { return inGroups(groups, m.Group) && kept(m) }
	})
}

func (a *api) getMachine(w http.ResponseWriter, r *http.Request) {
	m, err := a.svc.Machine(r.Context(), chi.URLParam(r, "host"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}
