package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// packageDoc is a package as GET /api/v1/packages lists it.
type packageDoc struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	OS         string   `json:"os"`
	Arch       string   `json:"arch"`
	SHA256     string   `json:"sha256"`
	Size       int64    `json:"size"`
	Components []string `json:"components"`
	Group      string   `json:"group"`
}

// packageName is what a package file's name says.
type packageName struct {
	Name, Version, OS, Arch string
}

var (
	// <name>-v<major>.<minor>.<patch>[-suffix], the name as short as can be
	pkgNameVersionRe = regexp.MustCompile(`^(.*?)-(v(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)(?:-[0-9A-Za-z]+(?:[.-][0-9A-Za-z]+)*)?)$`)
	pkgPlatformRe    = regexp.MustCompile(`-(linux|darwin)-(amd64|arm64|386|arm|ppc64le|s390x|riscv64|loong64)$`)
	pkgNameRe        = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// parsePackageFileName reads the name, version, OS and arch from a
// package file's name: dm-v8.1.0.tar.gz is dm v8.1.0 (linux/amd64 unless
// said otherwise), dm-v8.1.0-linux-arm64.tar.gz dm v8.1.0 linux/arm64,
// dm-v8.1.0-hotfix.1.tgz dm v8.1.0-hotfix.1.
func parsePackageFileName(file string) (packageName, error) {
	base := filepath.Base(file)
	const example = "like dm-v8.1.0.tar.gz or dm-v8.1.0-linux-amd64.tar.gz"
	stem, ok := strings.CutSuffix(base, ".tar.gz")
	if !ok {
		stem, ok = strings.CutSuffix(base, ".tgz")
	}
	if !ok {
		return packageName{}, fmt.Errorf("package file %s: the name must end in .tar.gz, %s; or give --name and --version", base, example)
	}
	var p packageName
	if m := pkgPlatformRe.FindStringSubmatch(stem); m != nil {
		p.OS, p.Arch = m[1], m[2]
		stem = stem[:len(stem)-len(m[0])]
	}
	m := pkgNameVersionRe.FindStringSubmatch(stem)
	if m == nil {
		return packageName{}, fmt.Errorf("package file %s has no version: expected <name>-v<major>.<minor>.<patch>[-suffix].tar.gz, %s; or give --version", base, example)
	}
	p.Name, p.Version = m[1], m[2]
	if !pkgNameRe.MatchString(p.Name) || strings.HasSuffix(p.Name, "-") {
		return packageName{}, fmt.Errorf("package file %s: name %q must start with a lowercase letter and hold only lowercase letters, digits and inner '-'", base, p.Name)
	}
	if p.OS != "" && p.OS != "linux" {
		return packageName{}, fmt.Errorf("package file %s is for %s; dmgr deploys to linux", base, p.OS)
	}
	if p.Arch != "" && p.Arch != "amd64" && p.Arch != "arm64" {
		return packageName{}, fmt.Errorf("package file %s is for %s; dmgr takes amd64 and arm64", base, p.Arch)
	}
	return p, nil
}

// uploadFlags name a package file's contents when its name does not.
type uploadFlags struct {
	name, version, arch, group string
	timeout                    time.Duration
}

func addUploadFlags(cmd *cobra.Command, f *uploadFlags) {
	cmd.Flags().StringVar(&f.name, "name", "", "the package's name (default: from the file name, dm)")
	cmd.Flags().StringVar(&f.version, "version", "", "the package's version, v8.1.0 (default: from the file name)")
	cmd.Flags().StringVar(&f.arch, "arch", "", "the binaries' arch, amd64 or arm64 (default: from the file name, amd64)")
	cmd.Flags().StringVar(&f.group, "group", "", "the group that owns the package (default: default)")
	cmd.Flags().DurationVar(&f.timeout, "upload-timeout", time.Hour, "deadline of the upload")
}

func (a *App) addPackageCommands(root *cobra.Command) {
	cmd := &cobra.Command{Use: "package", Short: "Upload offline DM packages and list them"}
	var up uploadFlags
	upload := &cobra.Command{
		Use:   "upload FILE",
		Short: "Upload an offline DM package (dm-vX.Y.Z.tar.gz)",
		Long: `Upload an offline DM package in the seed layout (bin/, conf/, template/,
grafana.tar.gz, others/). Its name, version and arch come from the file name
(dm-v8.1.0.tar.gz, dm-v8.1.0-linux-arm64.tar.gz) unless --name, --version
and --arch say them. The file is streamed, never read whole into memory; on
a terminal a bar shows the upload. The server checks every archive in it
as it arrives and stores nothing of a package it refuses.`,
		Example: "  dmgr package upload dm-v8.1.0.tar.gz\n  dmgr package upload ./build/dm.tar.gz --version v8.1.0-hotfix.1",
		Args:    args(1, 1, "FILE"),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return []string{"tar.gz", "tgz"}, cobra.ShellCompDirectiveFilterFileExt
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := a.uploadPackage(cmd.Context(), args[0], up)
			return err
		},
	}
	addUploadFlags(upload, &up)
	list := a.listCommand(listSpec{path: "/api/v1/packages", noun: "packages", short: "List the uploaded packages you may see, by id",
		example: "  dmgr package list\n  dmgr package list --all -o json"}, nil, writePackages)
	cmd.AddCommand(upload, list)
	root.AddCommand(cmd)
}

var writePackages = itemsTable([]string{"ID", "Name", "Version", "OS/Arch", "Size", "Components", "Group", "SHA256"}, func(p packageDoc) []string {
	return []string{p.ID, p.Name, p.Version, osArch(p.OS, p.Arch, "", ""), humanBytes(p.Size), strings.Join(p.Components, ","), p.Group, shortHash(p.SHA256)}
})

// uploadPackage streams file to the server and answers the package's id.
func (a *App) uploadPackage(ctx context.Context, file string, f uploadFlags) (string, error) {
	c, err := a.client()
	if err != nil {
		return "", err
	}
	p := packageName{Name: f.name, Version: f.version, Arch: f.arch}
	if p.Version == "" || p.Name == "" || p.Arch == "" {
		fromFile, err := parsePackageFileName(file)
		if err != nil && f.version == "" {
			return "", usageError("%v", err)
		}
		if err == nil {
			p.Name = firstNonEmpty(p.Name, fromFile.Name)
			p.Version = firstNonEmpty(p.Version, fromFile.Version)
			p.Arch = firstNonEmpty(p.Arch, fromFile.Arch)
		}
	}
	p.Name = firstNonEmpty(p.Name, "dm")
	p.Arch = firstNonEmpty(p.Arch, "amd64")
	fh, err := os.Open(file)
	if err != nil {
		return "", usageError("package %s: %v", file, errNoPath(err))
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", fmt.Errorf("package %s: %w", file, err)
	}
	if !st.Mode().IsRegular() {
		return "", usageError("package %s: not a file", file)
	}
	if f.timeout <= 0 {
		f.timeout = time.Hour
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	q := url.Values{"name": {p.Name}, "version": {p.Version}, "arch": {p.Arch}}
	if f.group != "" {
		q.Set("group", f.group)
	}
	sum := sha256.New()
	var body io.Reader = io.TeeReader(fh, sum)
	var bars *mpb.Progress
	var bar *mpb.Bar
	if a.output == OutputTable && drawsBars(a.Stdout) {
		bars = mpb.New(mpb.WithOutput(a.Stdout), mpb.WithWidth(40))
		bar = bars.AddBar(st.Size(),
			mpb.PrependDecorators(decor.Name("upload "+filepath.Base(file), decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Name("  "), decor.Elapsed(decor.ET_STYLE_GO)))
		pr, err := bar.ProxyReader(body)
		if err != nil {
			return "", fmt.Errorf("upload %s: %w", file, err)
		}
		defer pr.Close()
		body = pr
	}
	start := time.Now()
	var acc Accepted
	_, err = c.Do(ctx, Request{Method: http.MethodPost, Path: "/api/v1/packages", Query: q, Body: body,
		ContentType: "application/gzip", ContentLength: st.Size(), Idempotent: true, NoTimeout: true}, &acc)
	if bars != nil {
		if err != nil {
			bar.Abort(false)
		}
		bars.Wait()
	}
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", file, err)
	}
	id := p.Name + "-" + p.Version + "-linux-" + p.Arch
	if a.output != OutputTable {
		return id, a.print(map[string]any{"id": id, "name": p.Name, "version": p.Version, "os": "linux", "arch": p.Arch,
			"size": st.Size(), "sha256": hex.EncodeToString(sum.Sum(nil)), "operation_id": acc.OperationID, "commit_seq": acc.CommitSeq}, nil)
	}
	fmt.Fprintf(a.Stdout, "Uploaded %s as package %s (%s, sha256 %s) in %s\n", filepath.Base(file), id,
		humanBytes(st.Size()), hex.EncodeToString(sum.Sum(nil)), formatDuration(time.Since(start)))
	return id, nil
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
