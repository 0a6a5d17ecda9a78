package service

import (
	"context"
	"errors"
	"io"
	"sort"

	"github.com/nats-io/nats.go"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/eventstore"
)

// UploadPackageRequest names the package whose archive is in Body.
type UploadPackageRequest struct {
	Name    string // e.g. "dm"
	Version string // e.g. "v8.1.0"
	Arch    string // amd64 (default) or arm64
	Body    io.Reader
	Group   string // the group that will own it ("": DefaultGroup)
}

// UploadPackage streams the archive into the object store while checking
// it (archives inside it included), then records the package. A refused
// upload leaves no object behind and appends nothing; a package refused for
// its size or entry count (or an event too large for the bus) is
// domain.TooLarge.
func (s *Service) UploadPackage(ctx context.Context, meta Meta, r UploadPackageRequest) (Accepted, error) {
	if r.Arch == "" {
		r.Arch = "amd64"
	}
	meta = s.complete(meta)
	meta.Group = domain.OwnerGroup(r.Group)
	if err := s.allowInGroup(ctx, meta, "upload package "+r.Name+" "+r.Version+" to group "+meta.Group, "", ""); err != nil {
		return Accepted{}, err
	}
	cmd := domain.UploadPackage{Name: r.Name, Version: r.Version, OS: "linux", Arch: r.Arch, Group: meta.Group,
		SHA256: zeroSHA, Size: 1, Object: "pending"}
	id := domain.PackageID(r.Name, r.Version, cmd.OS, cmd.Arch)
	// Refuse a bad name or a duplicate before reading the body.
	p, err := s.loadPackage(ctx, id)
	if err != nil {
		return Accepted{}, err
	}
	if _, err := domain.DecideUploadPackage(p.state, cmd); err != nil {
		return Accepted{}, err
	}
	man, object, err := s.packages.Put(ctx, id, r.Body, s.limits)
	if err != nil {
		return Accepted{}, err
	}
	cmd.SHA256, cmd.Size, cmd.Object, cmd.Components = man.SHA256, man.Size, object, man.Components
	for _, f := range man.Files {
		cmd.Files = append(cmd.Files, domain.PackageFile{Path: f.Path, Size: f.Size, Mode: f.Mode, SHA256: f.SHA256})
	}
	acc, err := s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		p, err := s.loadPackage(ctx, id)
		if err != nil {
			return decision{}, err
		}
		evs, err := domain.DecideUploadPackage(p.state, cmd)
		return one(domain.AggregatePackage, id, evs, p.expect()), err
	})
	if errors.Is(err, nats.ErrMaxPayload) {
		// Limits.MaxManifestBytes keeps this from happening unless the
		// limits were not derived from this bus (Limits.ForPayload).
		err = domain.Errorf(domain.TooLarge,
			"package %s: the event recording its manifest (%d files) is larger than the bus's message size limit; use fewer files or shorter paths",
			id, len(man.Files))
	}
	if err != nil {
		if !s.objectInUse(ctx, object) {
			if derr := s.packages.Delete(context.WithoutCancel(ctx), object); derr != nil {
				s.log.Error().Err(derr).Str("object", object).Msg("remove object of a refused package upload")
			}
		}
		return Accepted{}, err
	}
	return acc, nil
}

const zeroSHA = "0000000000000000000000000000000000000000000000000000000000000000"

// objectInUse reports whether a recorded package refers to object (the
// same bytes uploaded under another name share the object).
func (s *Service) objectInUse(ctx context.Context, object string) bool {
	pkgs, err := s.Packages(ctx)
	if err != nil {
		return true // when in doubt, keep the bytes
	}
	for _, p := range pkgs {
		if p.Object == object {
			return true
		}
	}
	return false
}

func (s *Service) loadPackage(ctx context.Context, id string) (loaded[domain.Package], error) {
	return loadedOf(s.packageAgg.read(ctx, id))
}

// Packages lists the uploaded packages, sorted by id.
func (s *Service) Packages(ctx context.Context) ([]domain.Package, error) {
	w, err := s.loadWorld(ctx, eventstore.TypeSubjects(domain.AggregatePackage))
	if err != nil {
		return nil, err
	}
	out := []domain.Package{}
	for _, p := range w.Packages {
		out = append(out, *p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
