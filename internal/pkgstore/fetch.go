package pkgstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/domain"
)

// Why Fetch and not the object store's Get: Get reads an object through a
// pipe with one deadline for the whole read, the context's or, when it has
// none, the JetStream API timeout (5 s). A package of 250 MB read by several
// steps at once does not make it in 5 s, and the read fails with
// "nats: timeout" or "read pipe: i/o timeout" half way, with nothing to
// resume from. Fetch pulls the object's chunks itself: as fast as the writer
// takes them (a pull consumer asks for the next chunks only when the last
// ones are written), with a deadline per chunk and one for the whole read
// that grows with the object's size, and after a transient error it carries
// on from the first chunk not yet written.

// Fetch defaults; see FetchOptions.
const (
	DefaultFetchIdle     = 30 * time.Second
	DefaultFetchAttempts = 5
	DefaultFetchMinRate  = 1 << 20 // bytes per second
	DefaultFetchBase     = time.Minute

	// fetchBufferBytes bounds the chunks buffered ahead of the writer.
	fetchBufferBytes = 8 << 20
	// fetchBackoffMax bounds the wait between two attempts.
	fetchBackoffMax = 5 * time.Second
)

// FetchOptions tune [Store.Fetch]; zero values take the defaults.
type FetchOptions struct {
	// Idle is how long the read waits for the next chunk before it counts
	// the read as stalled and resumes it (DefaultFetchIdle).
	Idle time.Duration
	// Attempts bounds the reads of one object: the first and the resumed
	// ones after transient errors (DefaultFetchAttempts).
	Attempts int
	// MinRate and Base make the deadline of the whole read, Base plus the
	// object's size at MinRate bytes a second (1 min + 1 s per MiB by
	// default: 5 min 12 s for 252 MB), unless ctx ends sooner.
	MinRate int64
	Base    time.Duration
	// Log gets a warning for each resumed read (the caller's logger, with
	// its cluster, operation and step).
	Log zerolog.Logger
}

func (o FetchOptions) withDefaults() FetchOptions {
	if o.Idle <= 0 {
		o.Idle = DefaultFetchIdle
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultFetchAttempts
	}
	if o.MinRate <= 0 {
		o.MinRate = DefaultFetchMinRate
	}
	if o.Base <= 0 {
		o.Base = DefaultFetchBase
	}
	return o
}

// Deadline is how long a read of size bytes may take in all.
func (o FetchOptions) Deadline(size int64) time.Duration {
	o = o.withDefaults()
	return o.Base + time.Duration(float64(size)/float64(o.MinRate)*float64(time.Second))
}

// ObjectInfo is what the store says of a stored package object.
type ObjectInfo struct {
	Name   string // "sha256/<hex>"
	Size   int64
	Chunks int
	SHA256 string // hex SHA-256 of the content, from the object's digest
}

// FetchStats counts the reads of a [Store], for tests and metrics.
type FetchStats struct {
	Fetches int64 // Fetch calls that read an object (not the failed lookups)
	Resumes int64 // reads resumed after a transient error
	Bytes   int64 // bytes written by Fetch
}

// Stats returns the store's read counts so far.
func (s *Store) Stats() FetchStats {
	return FetchStats{Fetches: s.fetches.Load(), Resumes: s.resumes.Load(), Bytes: s.fetchedBytes.Load()}
}

// Info returns what the store says of object name. A name that is not
// stored gives domain.NotFound.
func (s *Store) Info(ctx context.Context, name string) (ObjectInfo, error) {
	info, _, err := s.info(ctx, name)
	return info, err
}

// info returns the object's info and the NUID that names its chunks.
func (s *Store) info(ctx context.Context, name string) (ObjectInfo, string, error) {
	if name == "" {
		return ObjectInfo{}, "", domain.Errorf(domain.Invalid, "package object name is empty")
	}
	raw, err := s.obs.GetInfo(ctx, name)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return ObjectInfo{}, "", domain.Errorf(domain.NotFound, "package %q is not stored", name)
		}
		return ObjectInfo{}, "", storeError("read package info "+name, err)
	}
	info, err := objectInfo(raw)
	return info, raw.NUID, err
}

func objectInfo(info *jetstream.ObjectInfo) (ObjectInfo, error) {
	if info.NUID == "" || (info.Opts != nil && info.Opts.Link != nil) {
		return ObjectInfo{}, fmt.Errorf("package object %s: not a plain object (a link or bad meta)", info.Name)
	}
	sum, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil && info.Size > 0 {
		return ObjectInfo{}, fmt.Errorf("package object %s: digest %q: %w", info.Name, info.Digest, err)
	}
	if info.Size == 0 {
		z := sha256.Sum256(nil)
		sum = z[:]
	}
	if len(sum) != sha256.Size {
		return ObjectInfo{}, fmt.Errorf("package object %s: digest %q is not a SHA-256", info.Name, info.Digest)
	}
	return ObjectInfo{Name: info.Name, Size: int64(info.Size), Chunks: int(info.Chunks), SHA256: hex.EncodeToString(sum)}, nil
}

// Fetch writes the content of the stored object name to w and returns its
// info. The chunks come through an ordered pull consumer on the bucket's
// stream, filtered on the object's chunks, at most a few MiB ahead of w.
// A chunk that does not come within o.Idle, a lost connection or a
// consumer the server dropped is a transient error: the read carries on
// from the chunk after the last one written, after a short backoff, up to
// o.Attempts reads in all, each logged. The whole read must end within
// o.Deadline(size) (and ctx). At the end the SHA-256 of what was written
// is checked against the object's digest.
//
// w sees each byte once, in order, even across resumed reads; on an error
// it holds a prefix of the object. A name that is not stored gives
// domain.NotFound.
func (s *Store) Fetch(ctx context.Context, name string, w io.Writer, o FetchOptions) (ObjectInfo, error) {
	o = o.withDefaults()
	info, nuid, err := s.info(ctx, name)
	if err != nil {
		return ObjectInfo{}, err
	}
	s.fetches.Add(1)
	ctx, cancel := context.WithTimeout(ctx, o.Deadline(info.Size))
	defer cancel()
	f := &fetch{s: s, info: info, subject: fmt.Sprintf("$O.%s.C.%s", Bucket, nuid), w: w, sum: sha256.New(), o: o}
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err = f.read(ctx)
		if err == nil {
			break
		}
		var perm *permanentError
		if errors.As(err, &perm) || ctx.Err() != nil || attempt >= o.Attempts {
			if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%w (the read may take %s for %d bytes)", err, o.Deadline(info.Size), info.Size)
			}
			return info, fmt.Errorf("read package %s: %d of %d bytes after %d attempts: %w", name, f.written, info.Size, attempt, err)
		}
		s.resumes.Add(1)
		o.Log.Warn().Err(err).Str("object", name).Int("attempt", attempt).Int64("offset", f.written).Int64("size", info.Size).
			Dur("backoff", backoff).Msg("package read interrupted; resuming from the last chunk written")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(2*backoff, fetchBackoffMax)
	}
	if got := hex.EncodeToString(f.sum.Sum(nil)); got != info.SHA256 {
		return info, fmt.Errorf("read package %s: content has SHA-256 %s, the store's digest says %s", name, got, info.SHA256)
	}
	return info, nil
}

// fetch is one object being read, across its attempts.
type fetch struct {
	s       *Store
	info    ObjectInfo
	subject string
	w       io.Writer
	sum     hash.Hash
	o       FetchOptions

	written int64
	chunks  int
	lastSeq uint64 // stream sequence of the last chunk written
}

// permanentError is a failure that reading again would not mend.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// read reads the chunks after f.lastSeq until the object is complete.
func (f *fetch) read(ctx context.Context) error {
	if f.written == f.info.Size {
		return nil
	}
	// A bounded number of resets inside the consumer (it holds its lock
	// while it tries): past them the error comes here, and the read
	// resumes with a new consumer.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.subject}, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute, MaxResetAttempts: 2}
	if f.lastSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.lastSeq+1
	}
	cctx, cancel := context.WithTimeout(ctx, f.o.Idle)
	cons, err := f.s.js.OrderedConsumer(cctx, "OBJ_"+Bucket, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("consumer on the chunks: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxBytes(fetchBufferBytes))
	if err != nil {
		return fmt.Errorf("pull the chunks: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop) // ends a Next that waits in a reset
	defer func() {
		stop()
		it.Stop()
		// The server would drop the consumer after a minute unused; it is
		// of no use once the read ends.
		if ci := cons.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = f.s.js.DeleteConsumer(dctx, "OBJ_"+Bucket, ci.Name)
			cancel()
		}
	}()
	for f.written < f.info.Size {
		nctx, cancel := context.WithTimeout(ctx, f.o.Idle)
		msg, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("no chunk for %s: %w", f.o.Idle, err)
			}
			return err
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("chunk metadata: %w", err)
		}
		if md.Sequence.Stream <= f.lastSeq {
			continue // delivered again after a reset: written already
		}
		data := msg.Data()
		if f.written+int64(len(data)) > f.info.Size {
			return &permanentError{fmt.Errorf("chunks hold more than the object's %d bytes", f.info.Size)}
		}
		if _, err := f.w.Write(data); err != nil {
			return &permanentError{fmt.Errorf("write: %w", err)}
		}
		f.sum.Write(data)
		f.written += int64(len(data))
		f.chunks++
		f.lastSeq = md.Sequence.Stream
		f.s.fetchedBytes.Add(int64(len(data)))
	}
	return nil
}
