package service

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dmgr/dmgr/domain"
	"github.com/dmgr/dmgr/internal/password"
	"github.com/dmgr/dmgr/internal/secrets"
)

// Users, their passwords, sessions and API tokens.
//
// A credential's secret is "dmgr_" and 43 characters of base64url (256
// random bits). It is shown once; the user's events keep its id, expiry
// and SHA-256 (its verifier), which the directory looks up. A password's
// argon2id hash is sealed in the passwords bucket (secrets.OpenPasswords)
// and named by reference.

// ThrottledError answers a login while its user name is locked out after
// repeated failures.
type ThrottledError struct {
	RetryAfter time.Duration
	msg        string
}

func (e *ThrottledError) Error() string { return e.msg }

// Login throttling: the first loginFreeFailures consecutive failures of a
// user name cost nothing more; each one after locks the name out for
// twice as long as the one before (1 s, 2 s, 4 s, … up to
// loginMaxLockout). A locked name is answered at once, without a
// password check, so a guesser gets a few tries an hour and no CPU;
// another name is not affected. A success clears the count.
const (
	loginFreeFailures = 5
	loginMaxLockout   = 15 * time.Minute
	loginMaxTracked   = 100_000
)

type loginThrottle struct {
	mu    sync.Mutex
	names map[string]*loginFailures
}

type loginFailures struct {
	n     int
	until time.Time
}

// check answers a ThrottledError while name is locked out at now.
func (t *loginThrottle) check(name string, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.names[name]
	if !ok || !now.Before(f.until) {
		return nil
	}
	wait := f.until.Sub(now).Round(time.Second) + time.Second
	return &ThrottledError{RetryAfter: wait, msg: fmt.Sprintf("too many failed logins for user %s: try again in %s", name, wait)}
}

func (t *loginThrottle) fail(name string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.names) >= loginMaxTracked {
		for k, f := range t.names {
			if !now.Before(f.until) {
				delete(t.names, k)
			}
		}
		if len(t.names) >= loginMaxTracked {
			return // every tracked name is locked; this one is not counted
		}
	}
	f := t.names[name]
	if f == nil {
		f = &loginFailures{}
		t.names[name] = f
	}
	f.n++
	if over := f.n - loginFreeFailures; over > 0 {
		lock := loginMaxLockout
		if over <= 20 {
			lock = min(time.Duration(1<<(over-1))*time.Second, loginMaxLockout)
		}
		f.until = now.Add(lock)
	}
}

func (t *loginThrottle) succeed(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.names, name)
}

// DefaultSessionTTL is how long a login session lasts.
const DefaultSessionTTL = 12 * time.Hour

// LoginResult is what a login answers.
type LoginResult struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	ID        string    `json:"id"`
}

// newSecret returns a fresh credential secret.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("credential secret: %w", err)
	}
	return "dmgr_" + base64.RawURLEncoding.EncodeToString(b), nil
}

func newTokenID(prefix string) string { return prefix + newID() }

// hashSlot takes one of the slots that bound how many argon2id hashes run
// at once (each takes password.Default.Memory and a core).
func (s *Service) hashSlot(ctx context.Context) (func(), error) {
	select {
	case s.hashing <- struct{}{}:
		return func() { <-s.hashing }, nil
	case <-ctx.Done():
		return nil, domain.Errorf(domain.Unavailable, "the server is busy checking passwords; retry")
	}
}

// passwordOwner is the vault owner of a user's password hash.
func passwordOwner(user string) string { return "user:" + user }

// storePassword hashes pw and seals the hash in the passwords bucket.
func (s *Service) storePassword(ctx context.Context, user, pw string) (string, error) {
	if err := domain.ValidatePassword(pw); err != nil {
		return "", err
	}
	if s.passwords == nil {
		return "", domain.Errorf(domain.Unavailable, "this server keeps no passwords (no passwords bucket configured)")
	}
	release, err := s.hashSlot(ctx)
	if err != nil {
		return "", err
	}
	h, err := password.Hash(pw, password.Default)
	release()
	if err != nil {
		return "", err
	}
	return s.passwords.Put(ctx, secrets.KindPasswordHash, []byte(h), passwordOwner(user))
}

// Login checks a user's password and starts a session.
func (s *Service) Login(ctx context.Context, name, pw string) (LoginResult, error) {
	now := s.now()
	if err := s.throttle.check(name, now); err != nil {
		return LoginResult{}, err
	}
	wrong := domain.Errorf(domain.Unauthorized, "wrong user name or password")
	release, err := s.hashSlot(ctx)
	if err != nil {
		return LoginResult{}, err
	}
	u, known := s.dir.User(name)
	ok := false
	if known && u.PasswordRef != "" && s.passwords != nil {
		_, hash, gerr := s.passwords.Get(ctx, u.PasswordRef, passwordOwner(name))
		if gerr != nil && domain.ErrorCode(gerr) != domain.NotFound {
			release()
			return LoginResult{}, fmt.Errorf("login %s: read password hash: %w", name, gerr)
		}
		if gerr == nil {
			ok, err = password.Verify(string(hash), pw)
			clear(hash)
			if err != nil {
				s.log.Error().Err(err).Str("user", name).Msg("login: stored password hash is unreadable")
			}
		}
	} else {
		password.Burn(pw) // as long as a wrong password takes
	}
	release()
	if !ok {
		s.throttle.fail(name, s.now())
		s.log.Info().Str("user", name).Msg("login failed")
		return LoginResult{}, wrong
	}
	s.throttle.succeed(name)
	if !u.Active() {
		return LoginResult{}, domain.Errorf(domain.Unauthorized, "user %s is disabled", name)
	}
	secret, err := newSecret()
	if err != nil {
		return LoginResult{}, err
	}
	id := newTokenID("s-")
	expires := now.Add(s.sessionTTL).UTC().Truncate(time.Second)
	p := domain.Principal{User: name, TokenID: id}
	acc, err := s.onUser(ctx, Meta{Principal: &p}, name, func(u *domain.User) ([]domain.Event, error) {
		return domain.DecideIssueToken(u, name, domain.IssueToken{ID: id, Name: "login", Kind: domain.TokenSession,
			Now: now, ExpiresAt: expires, Verifier: Verifier(secret)})
	})
	if err != nil {
		return LoginResult{}, err
	}
	if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
		return LoginResult{}, err
	}
	s.log.Info().Str("user", name).Str("token", id).Msg("logged in")
	return LoginResult{Token: secret, ExpiresAt: expires, ID: id}, nil
}

// Logout ends the session meta's principal presented.
func (s *Service) Logout(ctx context.Context, meta Meta) error {
	p := meta.Principal
	if p == nil {
		return domain.Errorf(domain.Unauthorized, "no session to end")
	}
	owner, ok := s.dir.TokenOwner(p.TokenID)
	u, _ := s.dir.User(owner)
	if !ok || u.Tokens[p.TokenID].Kind != domain.TokenSession {
		return domain.Errorf(domain.Invalid, "logout ends a login session, and this request carries none: revoke an API token with DELETE /api/v1/tokens/{id}")
	}
	return s.revoke(ctx, meta, owner, p.TokenID, "logout")
}

// CreatedToken is a new API token: its secret is in Token, once.
type CreatedToken struct {
	domain.Token
	Secret string `json:"token"`
}

// CreateToken makes an API token for meta's principal.
func (s *Service) CreateToken(ctx context.Context, meta Meta, name string, expiresIn time.Duration, readOnly bool) (CreatedToken, error) {
	p := meta.Principal
	if p == nil {
		return CreatedToken{}, domain.Errorf(domain.Unauthorized, "no user to make a token for")
	}
	if p.ReadOnly && !readOnly {
		return CreatedToken{}, domain.Errorf(domain.Forbidden, "a read-only token can only make read-only tokens: send \"read_only\": true")
	}
	secret, err := newSecret()
	if err != nil {
		return CreatedToken{}, err
	}
	now := s.now()
	t := domain.Token{ID: newTokenID("t-"), User: p.User, Name: name, Kind: domain.TokenAPI, ReadOnly: readOnly,
		CreatedAt: now.UTC(), ExpiresAt: now.Add(expiresIn).UTC().Truncate(time.Second), Verifier: Verifier(secret)}
	acc, err := s.onUser(ctx, meta, p.User, func(u *domain.User) ([]domain.Event, error) {
		return domain.DecideIssueToken(u, p.User, domain.IssueToken{ID: t.ID, Name: name, Kind: domain.TokenAPI, ReadOnly: readOnly,
			Now: now, ExpiresAt: t.ExpiresAt, Verifier: t.Verifier})
	})
	if err != nil {
		return CreatedToken{}, err
	}
	if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
		return CreatedToken{}, err
	}
	return CreatedToken{Token: t, Secret: secret}, nil
}

// Tokens lists the live credentials of meta's principal (kind "" for
// every kind), oldest first.
func (s *Service) Tokens(meta Meta, kind string) []domain.Token {
	if meta.Principal == nil {
		return nil
	}
	u, _ := s.dir.User(meta.Principal.User)
	return u.TokensOf(kind, s.now())
}

// RevokeToken ends credential id: the principal's own, or anyone's for a
// super admin.
func (s *Service) RevokeToken(ctx context.Context, meta Meta, id string) error {
	owner, ok := s.dir.TokenOwner(id)
	p := meta.Principal
	if !ok || (p != nil && owner != p.User && !p.SuperAdmin) {
		return domain.Errorf(domain.NotFound, "token %s does not exist (or expired or was revoked)", id)
	}
	if p != nil && p.ReadOnly && id != p.TokenID {
		return domain.Errorf(domain.Forbidden, "revoking another token needs a token that may write; this one (%s) is read-only", p.TokenID)
	}
	return s.revoke(ctx, meta, owner, id, "revoked")
}

func (s *Service) revoke(ctx context.Context, meta Meta, owner, id, reason string) error {
	acc, err := s.onUser(ctx, meta, owner, func(u *domain.User) ([]domain.Event, error) {
		return domain.DecideRevokeToken(u, id, reason)
	})
	if err != nil {
		return err
	}
	return s.dir.WaitFor(ctx, acc.CommitSeq)
}

// onUser decides on a user and appends, deciding again on a conflict.
func (s *Service) onUser(ctx context.Context, meta Meta, name string, decide func(*domain.User) ([]domain.Event, error)) (Accepted, error) {
	if err := domain.ValidateUserName(name); err != nil {
		return Accepted{}, err
	}
	meta.noOperation, meta.OperationID = true, ""
	return s.run(ctx, meta, func(ctx context.Context) (decision, error) {
		u, err := loadedOf(s.users.read(ctx, name))
		if err != nil {
			return decision{}, err
		}
		evs, err := decide(u.state)
		return one(domain.AggregateUser, name, evs, u.expect()), err
	})
}

// CreateUser makes a user with a password (super admins only).
func (s *Service) CreateUser(ctx context.Context, meta Meta, name, pw string, superAdmin bool) (domain.User, error) {
	meta = s.complete(meta)
	if err := s.superOnly(ctx, meta, "create user "+name); err != nil {
		return domain.User{}, err
	}
	if err := domain.ValidateUserName(name); err != nil {
		return domain.User{}, err
	}
	if u, ok := s.dir.User(name); ok {
		_, err := domain.DecideCreateUser(&u, domain.CreateUser{Name: name})
		return domain.User{}, err // before a hash is made for nothing
	}
	ref, err := s.storePassword(ctx, name, pw)
	if err != nil {
		return domain.User{}, err
	}
	acc, err := s.onUser(ctx, meta, name, func(u *domain.User) ([]domain.Event, error) {
		return domain.DecideCreateUser(u, domain.CreateUser{Name: name, SuperAdmin: superAdmin, PasswordRef: ref, At: s.now()})
	})
	if err != nil {
		_ = s.passwords.Delete(context.WithoutCancel(ctx), ref)
		return domain.User{}, err
	}
	if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
		return domain.User{}, err
	}
	u, _ := s.dir.User(name)
	return u, nil
}

// UserCommand is one of the super admin's commands on a user.
type UserCommand string

// User commands.
const (
	DisableUser UserCommand = "disable"
	EnableUser  UserCommand = "enable"
	DeleteUser  UserCommand = "delete"
)

// ChangeUser disables, enables or deletes a user (super admins only).
func (s *Service) ChangeUser(ctx context.Context, meta Meta, name string, c UserCommand) (domain.User, error) {
	meta = s.complete(meta)
	if err := s.superOnly(ctx, meta, string(c)+" user "+name); err != nil {
		return domain.User{}, err
	}
	var oldRef string
	acc, err := s.onUser(ctx, meta, name, func(u *domain.User) ([]domain.Event, error) {
		switch c {
		case DisableUser:
			return domain.DecideDisableUser(u, name, meta.Actor)
		case EnableUser:
			return domain.DecideEnableUser(u, name)
		case DeleteUser:
			if u != nil {
				oldRef = u.PasswordRef
			}
			return domain.DecideDeleteUser(u, name, meta.Actor)
		}
		return nil, domain.Errorf(domain.Invalid, "unknown user command %q", c)
	})
	if err != nil {
		return domain.User{}, err
	}
	if c == DeleteUser && oldRef != "" && s.passwords != nil {
		if err := s.passwords.Delete(ctx, oldRef); err != nil {
			s.log.Warn().Err(err).Str("user", name).Msg("deleted user's password hash not removed")
		}
	}
	if err := s.dir.WaitFor(ctx, acc.CommitSeq); err != nil {
		return domain.User{}, err
	}
	u, _ := s.dir.User(name)
	return u, nil
}

// ResetPassword sets a user's password (super admins, or the user with
// a credential that may write); their sessions end.
func (s *Service) ResetPassword(ctx context.Context, meta Meta, name, pw string) error {
	meta = s.complete(meta)
	if meta.Principal != nil && meta.Principal.User != name {
		if err := s.superOnly(ctx, meta, "reset the password of user "+name); err != nil {
			return err
		}
	} else if meta.Principal != nil && meta.Principal.ReadOnly {
		return domain.Errorf(domain.Forbidden, "changing a password needs a token that may write; this one is read-only")
	}
	if _, ok := s.dir.User(name); !ok {
		return domain.Errorf(domain.NotFound, "user %s does not exist", name)
	}
	ref, err := s.storePassword(ctx, name, pw)
	if err != nil {
		return err
	}
	var oldRef string
	acc, err := s.onUser(ctx, meta, name, func(u *domain.User) ([]domain.Event, error) {
		if u != nil {
			oldRef = u.PasswordRef
		}
		return domain.DecideResetPassword(u, name, ref)
	})
	if err != nil {
		_ = s.passwords.Delete(context.WithoutCancel(ctx), ref)
		return err
	}
	if oldRef != "" {
		_ = s.passwords.Delete(ctx, oldRef)
	}
	return s.dir.WaitFor(ctx, acc.CommitSeq)
}

// Users lists users for a super admin.
func (s *Service) Users(ctx context.Context, meta Meta, after string, limit int) ([]domain.User, bool, error) {
	if err := s.allow(ctx, meta, domain.Access{What: "list users", SuperOnly: true}, "", ""); err != nil {
		return nil, false, err
	}
	us, more := s.dir.Users(after, limit)
	return us, more, nil
}

// UserOf returns a user for a super admin or the user themself.
func (s *Service) UserOf(ctx context.Context, meta Meta, name string) (domain.User, error) {
	if meta.Principal == nil || meta.Principal.User != name {
		if err := s.allow(ctx, meta, domain.Access{What: "read user " + name, SuperOnly: true}, "", ""); err != nil {
			return domain.User{}, err
		}
	}
	u, ok := s.dir.User(name)
	if !ok || u.Deleted {
		return domain.User{}, domain.Errorf(domain.NotFound, "user %s does not exist", name)
	}
	return u, nil
}

// Bootstrap makes the first super admin (name, with password pw) unless
// the user exists, and the default group unless it exists. It is safe to
// run on every start of every server.
func (s *Service) Bootstrap(ctx context.Context, name, pw string) error {
	meta := Meta{Actor: reserveActor}
	if err := s.dir.WaitReady(ctx); err != nil {
		return err
	}
	if _, ok := s.dir.Group(domain.DefaultGroup); !ok {
		if _, err := s.CreateGroup(ctx, meta, domain.DefaultGroup); err != nil && domain.ErrorCode(err) != domain.Conflict {
			return fmt.Errorf("bootstrap: group %s: %w", domain.DefaultGroup, err)
		}
	}
	if name == "" || pw == "" {
		return nil
	}
	if _, ok := s.dir.User(name); ok {
		return nil
	}
	if _, err := s.CreateUser(ctx, meta, name, pw, true); err != nil && domain.ErrorCode(err) != domain.Conflict {
		return fmt.Errorf("bootstrap: super admin %s: %w", name, err)
	}
	return nil
}

// Directory is the server's directory of users, groups and approvals.
func (s *Service) Directory() *Directory { return s.dir }

// approvalIDFor derives an approval request's id from its command's
// commit id, so that a retried request (Idempotency-Key) names the same
// request.
func approvalIDFor(commitID string) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, []byte("dmgr-approval/"+commitID)).String()
}
