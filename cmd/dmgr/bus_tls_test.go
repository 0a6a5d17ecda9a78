package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"

	"github.com/dmgr/dmgr/internal/busauth"
	"github.com/dmgr/dmgr/internal/testenv"
)

// testTLS makes a CA and a certificate for 127.0.0.1 signed by it; it
// returns the server's TLS config and the CA's PEM file.
func testTLS(t *testing.T) (*tls.Config, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dmgr test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}, caFile
}

// With --nats-ca-file a process connects to a TLS bus, and the anonymous
// probe goes over TLS too; without the CA the connection is refused.
func TestTheBusConnectionTakesACAFileForTLS(t *testing.T) {
	dir := t.TempDir()
	id := busauth.Identity{Role: busauth.Server}
	users, err := busauth.EnsureSeeds(filepath.Join(dir, "creds"), id)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, caFile := testTLS(t)
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Nkeys: busauth.NkeyUsers(users), TLSConfig: tlsCfg, TLS: true, TLSTimeout: 5})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("TLS nats-server did not start")
	}
	url := strings.Replace(srv.ClientURL(), "nats://", "tls://", 1)
	ctx := testenv.Context(t, 30*time.Second)
	b := busConfig{nkeyFile: users[0].SeedFile, caFile: caFile}
	nc, err := dialBus(ctx, url, id, b.nkeyFile, b, true, zerolog.Nop())
	if err != nil {
		t.Fatalf("connect over TLS with the CA: %v", err)
	}
	if !nc.TLSRequired() {
		t.Fatal("the connection is not TLS")
	}
	nc.Close()
	b.caFile = ""
	if nc, err := dialBus(ctx, url, id, b.nkeyFile, b, true, zerolog.Nop()); err == nil {
		nc.Close()
		t.Fatal("connected over TLS without the CA")
	}
}
