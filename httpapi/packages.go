package httpapi

import (
	"mime"
	"net/http"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/pkgstore"
	"github.com/dmgr/dmgr/internal/service"
	"github.com/dmgr/dmgr/projections"
)

// uploadPackage takes the .tar.gz as the request body. The package's name
// and version come from ?version= (name "dm"), from ?filename=, or from the
// file name in Content-Disposition, in that order.
func (a *api) uploadPackage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, version := q.Get("name"), q.Get("version")
	if version == "" {
		file := q.Get("filename")
		if file == "" {
			if _, params, err := mime.ParseMediaType(r.Header.Get("Content-Disposition")); err == nil {
				file = params["filename"]
			}
		}
		if file == "" {
			writeError(w, r, domain.Errorf(domain.Invalid,
				"name the package: add ?filename=dm-v8.1.0.tar.gz or ?version=v8.1.0, or send Content-Disposition: attachment; filename=dm-v8.1.0.tar.gz"))
			return
		}
		n, v, err := pkgstore.ParseName(file)
		if err != nil {
			writeError(w, r, err)
			return
		}
		name, version = n, v
	}
	if name == "" {
		name = domain.DMPackageName
	}
	acc, err := a.svc.UploadPackage(r.Context(), meta(r), service.UploadPackageRequest{
		Name: name, Version: version, Arch: q.Get("arch"), Body: r.Body, Group: q.Get("group")})
	if err != nil {
		writeError(w, r, err)
		return
	}
	accepted(w, acc)
}

func (a *api) listPackages(w http.ResponseWriter, r *http.Request) {
	ps, err := a.svc.Packages(r.Context())
	id := func(p domain.Package) string { return p.ID }
	answerList(w, r, ps, err, id, id, func(q projections.ListQuery) func(domain.Package) bool {
		groups := visible(r)
		return func(p domain.Package) bool { return p.ID > q.After && inGroups(groups, p.Group) }
	})
}
