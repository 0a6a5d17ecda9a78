// Package pkgstore checks and stores offline DM packages (dm-vX.Y.Z.tar.gz).
//
// [Inspect] reads an uploaded package once, as a stream, and either refuses
// it with a domain error that names the offending entry (paths climbing out of
// the package, absolute paths, links pointing outside it, device files, size
// and entry-count limits, missing bin/dm-master or bin/dm-worker) or returns
// its [Manifest]: the SHA-256 of the body as received, every regular file with
// its own SHA-256, and the components the package provides.
//
// [Store] keeps packages in the JetStream object store bucket "dmgr-packages",
// content-addressed as "sha256/<hex>". [Store.Put] uploads and inspects in the
// same pass; a package that fails inspection leaves nothing in the bucket.
package pkgstore
