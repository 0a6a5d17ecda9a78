package pkgstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dmgr/dmgr/domain"
)

// errUploadEnded tells a still running Inspect that the upload stopped.
var errUploadEnded = errors.New("upload to the package store ended early")

// cleanupTimeout bounds the removal of an upload left behind by a failure,
// which runs even when ctx is already cancelled.
const cleanupTimeout = 30 * time.Second

// Put stores the package read from body and returns its manifest and object
// name, "sha256/<hex>"; name (the package id, or "") names the package in
// Inspect's messages. The body is read once: each chunk goes to the object
// store, under a temporary name, and through Inspect. When Inspect refuses
// the package the upload is aborted before it is committed, and nothing is
// left in the bucket; the error is Inspect's (domain.Invalid or
// domain.TooLarge). A package that is already stored is kept and its name
// returned.
func (s *Store) Put(ctx context.Context, name string, body io.Reader, lim Limits) (Manifest, string, error) {
	tmp := uploadPrefix + uuid.NewString()
	pr, pw := io.Pipe()
	verdicts := make(chan verdict, 1)
	go func() {
		m, err := Inspect(pr, name, lim)
		// Inspect stops reading at the first refused entry; fail the writes
		// still to come instead of leaving them blocked.
		pr.CloseWithError(errInspectEnded(err))
		verdicts <- verdict{m, err}
	}()

	// obs.Put purges the chunks of a failed upload with the context it was
	// given, so a cancelled ctx would leave them behind, unreachable. Give it
	// a context that is not cancelled (each publish keeps its own timeout)
	// and let tee stop the upload when ctx ends.
	tee := &teeToInspect{ctx: ctx, body: body, pw: pw, verdicts: verdicts}
	info, putErr := s.obs.Put(context.WithoutCancel(ctx), jetstream.ObjectMeta{Name: tmp}, tee)
	pw.CloseWithError(errUploadEnded) // no-op when the body ended; else unblocks Inspect
	v := tee.verdict()

	switch {
	case v.err != nil && domain.ErrorCode(v.err) != domain.Internal:
		s.discard(ctx, tmp)
		return Manifest{}, "", v.err // the package is refused
	case putErr != nil:
		s.discard(ctx, tmp)
		return Manifest{}, "", storeError("store package", putErr)
	case v.err != nil:
		s.discard(ctx, tmp)
		return Manifest{}, "", fmt.Errorf("store package: %w", v.err)
	}
	m := v.m
	if err := sameContent(info, m); err != nil {
		s.discard(ctx, tmp)
		return Manifest{}, "", fmt.Errorf("store package: %w", err)
	}

	// The rename runs to its end even if ctx is cancelled now: stopping
	// half way could leave both names on the same chunks.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	object := objectPrefix + m.SHA256
	err := s.obs.UpdateMeta(rctx, tmp, jetstream.ObjectMeta{Name: object})
	switch {
	case err == nil:
		return m, object, nil
	case errors.Is(err, jetstream.ErrObjectAlreadyExists):
		// The same package was stored before: keep that copy.
		s.discard(ctx, tmp)
		return m, object, nil
	}
	// UpdateMeta writes the new name before it removes the old one. If it
	// got that far the package is stored, and deleting tmp would purge the
	// chunks both names share; if we cannot tell, tmp is left alone.
	got, gerr := s.obs.GetInfo(rctx, object)
	switch {
	case gerr == nil && got.NUID == info.NUID:
		return m, object, nil
	case gerr == nil || errors.Is(gerr, jetstream.ErrObjectNotFound):
		s.discard(ctx, tmp)
	}
	return Manifest{}, "", storeError("store package: rename "+tmp+" to "+object, err)
}

// discard deletes the temporary upload tmp if it exists. obs.Put purges the
// chunks of an aborted upload itself; this covers an upload that was
// committed, or a commit that may have landed after a timeout.
func (s *Store) discard(ctx context.Context, tmp string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, err := s.obs.GetInfo(ctx, tmp); err != nil {
		return // not found, or the store is unreachable: nothing more to do here
	}
	_ = s.obs.Delete(ctx, tmp) // best effort; an orphan "upload/" object is harmless
}

// sameContent checks that the object store received what Inspect read.
func sameContent(info *jetstream.ObjectInfo, m Manifest) error {
	sum, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return fmt.Errorf("object digest %q: %w", info.Digest, err)
	}
	if int64(info.Size) != m.Size || hex.EncodeToString(sum) != m.SHA256 {
		return fmt.Errorf("object store received %d bytes with digest %s, but Inspect read %d bytes with SHA-256 %s",
			info.Size, info.Digest, m.Size, m.SHA256)
	}
	return nil
}

type verdict struct {
	m   Manifest
	err error
}

func errInspectEnded(err error) error {
	if err != nil {
		return err
	}
	return io.ErrClosedPipe
}

// teeToInspect is the reader obs.Put uploads from. It copies every chunk of
// body into the pipe Inspect reads, and at the end of body it waits for
// Inspect's verdict: a refused package fails the read, so obs.Put never
// commits the object and purges its chunks. It also fails the read once ctx
// is done.
type teeToInspect struct {
	ctx      context.Context
	body     io.Reader
	pw       *io.PipeWriter
	verdicts <-chan verdict
	v        *verdict
}

func (t *teeToInspect) verdict() verdict {
	if t.v == nil {
		v := <-t.verdicts
		t.v = &v
	}
	return *t.v
}

func (t *teeToInspect) Read(p []byte) (int, error) {
	if err := t.ctx.Err(); err != nil {
		t.pw.CloseWithError(err)
		return 0, err
	}
	n, err := t.body.Read(p)
	if n > 0 {
		if _, werr := t.pw.Write(p[:n]); werr != nil {
			// Inspect has stopped reading; it says why.
			if v := t.verdict(); v.err != nil {
				return 0, v.err
			}
			return 0, werr
		}
	}
	switch {
	case err == io.EOF:
		t.pw.Close()
		if v := t.verdict(); v.err != nil {
			return 0, v.err
		}
		return n, io.EOF
	case err != nil:
		err = fmt.Errorf("read package body: %w", err)
		t.pw.CloseWithError(err)
		return n, err
	}
	return n, nil
}
