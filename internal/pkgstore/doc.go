// Package pkgstore checks and stores offline DM packages (dm-vX.Y.Z.tar.gz).
//
// [Inspect] reads an uploaded package once, as a stream, and either refuses
// it with a domain error that names the package, the archive and the
// offending entry ("package dm-v8.1.0-linux-amd64: grafana.tar.gz: entry
// "../x": path climbs out of the archive") or returns its [Manifest]: the
// SHA-256 of the body as received, every regular file with its own
// SHA-256, and the components the package provides.
//
// The package and every archive inside it (a .tar.gz, .tgz or .tar file,
// such as grafana.tar.gz, which the hosts unpack, and the archives inside
// those, down to [Limits].MaxDepth) are checked alike, each read as a
// stream while the enclosing one is: no absolute paths or paths climbing
// out, no links leading out (followed through the archive's own symlinks),
// nothing placed through a link, no duplicate entries, only regular files,
// directories and links (no devices, FIFOs, sparse files), no set-uid,
// set-gid or sticky bits, no ACLs or security, trusted or system extended
// attributes. Archives in formats that cannot be checked as a stream (zip,
// bzip2, xz, zstd, 7-Zip, RAR) are refused. [Limits] bound the upload, the
// bytes unpacked (the package and its archives together), the entries, the
// compression ratio of every gzip stream (a compression bomb stops after a
// few MiB), and the manifest's JSON size, so that the event recording a
// package fits in one message of the bus ([Limits.ForPayload]). Missing
// bin/dm-master or bin/dm-worker is refused too.
//
// [Store] keeps packages in the JetStream object store bucket "dmgr-packages",
// content-addressed as "sha256/<hex>". [Store.Put] uploads and inspects in the
// same pass; a package that fails inspection leaves nothing in the bucket:
// neither an object nor a chunk of its stream.
package pkgstore
