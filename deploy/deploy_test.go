// Package deploy holds the deployment artefacts (Kubernetes manifests,
// Grafana dashboard, compose stack); its tests keep them true to the code.
package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/vtk/dispenser/internal/api"
	"github.com/vtk/dispenser/internal/config"
	"github.com/vtk/dispenser/internal/metrics"
	"github.com/vtk/dispenser/internal/testenv"
	"github.com/vtk/dispenser/internal/validate"
)

// docs decodes every YAML document of a file.
func docs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var out []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			out = append(out, d)
		}
	}
}

// at walks a decoded document: at(d, "spec", "template", 0, "name").
func at(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				return nil
			}
			v = s[k]
		}
	}
	return v
}

func manifests(t *testing.T) map[string][]map[string]any {
	t.Helper()
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	byKind := map[string][]map[string]any{}
	for _, f := range files {
		for _, d := range docs(t, f) {
			kind, _ := d["kind"].(string)
			if d["apiVersion"] == nil || kind == "" || at(d, "metadata", "name") == nil {
				t.Errorf("%s: a document lacks apiVersion, kind or metadata.name", f)
			}
			byKind[kind] = append(byKind[kind], d)
		}
	}
	return byKind
}

func TestManifests(t *testing.T) {
	k := manifests(t)
	for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "Secret",
		"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "ServiceAccount"} {
		if len(k[kind]) == 0 {
			t.Errorf("no %s manifest", kind)
		}
	}
	d := k["Deployment"][0]
	if r, _ := at(d, "spec", "replicas").(int); r < 2 {
		t.Errorf("replicas = %v, want 2 or more", at(d, "spec", "replicas"))
	}
	c := at(d, "spec", "template", "spec", "containers", 0)
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if at(c, probe, "httpGet", "port") != "admin" {
			t.Errorf("%s is not on the admin port", probe)
		}
	}
	if at(c, "readinessProbe", "httpGet", "path") != "/readyz" || at(c, "livenessProbe", "httpGet", "path") != "/healthz" {
		t.Error("probes must use /readyz and /healthz")
	}
	if at(c, "resources", "requests", "cpu") == nil || at(c, "resources", "requests", "memory") == nil {
		t.Error("resource requests missing")
	}
	sc := at(c, "securityContext")
	if at(sc, "readOnlyRootFilesystem") != true || at(sc, "allowPrivilegeEscalation") != false || at(sc, "runAsNonRoot") != true ||
		!reflect.DeepEqual(at(sc, "capabilities", "drop"), []any{"ALL"}) {
		t.Errorf("container securityContext = %v", sc)
	}
	if at(d, "spec", "template", "spec", "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext must be runAsNonRoot")
	}
	ports := map[any]bool{}
	for _, p := range at(c, "ports").([]any) {
		ports[at(p, "name")] = true
	}
	if !ports["admin"] || !ports["https"] {
		t.Errorf("container ports %v", ports)
	}
	if at(k["PodDisruptionBudget"][0], "spec", "minAvailable") == nil && at(k["PodDisruptionBudget"][0], "spec", "maxUnavailable") == nil {
		t.Error("PDB without minAvailable/maxUnavailable")
	}
	if m, _ := at(k["HorizontalPodAutoscaler"][0], "spec", "minReplicas").(int); m < 2 {
		t.Error("HPA minReplicas must be 2 or more")
	}
	if at(k["ServiceMonitor"][0], "spec", "endpoints", 0, "port") != "admin" {
		t.Error("ServiceMonitor must scrape the admin port")
	}
	// The ConfigMap's dispenser.yaml is itself valid YAML with the admin
	// listener reachable by probes.
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(at(k["ConfigMap"][0], "data", "dispenser.yaml").(string)), &cfg); err != nil {
		t.Fatalf("ConfigMap dispenser.yaml: %v", err)
	}
	if a, _ := at(cfg, "server", "admin_listen").(string); !strings.HasSuffix(a, ":9090") || strings.HasPrefix(a, "127.") {
		t.Errorf("server.admin_listen %q must listen beyond loopback on 9090 for probes", a)
	}
	// Alerts named by the issue.
	alerts := map[string]bool{}
	for _, g := range at(k["PrometheusRule"][0], "spec", "groups").([]any) {
		for _, r := range at(g, "rules").([]any) {
			alerts[at(r, "alert").(string)] = true
		}
	}
	for _, a := range []string{"DispenserHighDenialRate", "DispenserBackendErrors", "DispenserAuditWriteFailures", "DispenserCertificateExpiring", "DispenserNoIssuances", "DispenserConnectionsAtCap"} {
		if !alerts[a] {
			t.Errorf("alert %s missing", a)
		}
	}
	// The compose stack's rules are the same groups.
	rules := docs(t, "prometheus-rules.yml")
	if !reflect.DeepEqual(rules[0]["groups"], at(k["PrometheusRule"][0], "spec", "groups")) {
		t.Error("prometheus-rules.yml differs from kubernetes/prometheusrule.yaml")
	}
	for _, f := range []string{"compose.yaml", "prometheus.yml", "compose.dispenser.yaml"} {
		if len(docs(t, f)) == 0 {
			t.Errorf("%s is empty", f)
		}
	}
	compose := docs(t, "compose.yaml")[0]
	for _, s := range []string{"dispenser", "postgres", "prometheus"} {
		if at(compose, "services", s) == nil {
			t.Errorf("compose service %s missing", s)
		}
	}
}

// registered returns every metric family name metrics.New registers,
// including vectors that have no series yet.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for name := range registeredLabels(t) {
		names[name] = true
	}
	fams, err := metrics.New("test").Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		names[f.GetName()] = true
	}
	if !names["dispenser_issuances_total"] || !names["dispenser_revocation_hits_total"] {
		t.Fatalf("registry walk found too little: %v", names)
	}
	return names
}

var metricRef = regexp.MustCompile(`\bdispenser_[a-z0-9_]+`)

func checkNames(t *testing.T, where string, exprs []string, names map[string]bool) {
	t.Helper()
	if len(exprs) == 0 {
		t.Errorf("%s: no expressions", where)
	}
	for _, e := range exprs {
		for _, ref := range metricRef.FindAllString(e, -1) {
			base := ref
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if strings.HasSuffix(ref, suf) && names[strings.TrimSuffix(ref, suf)] {
					base = strings.TrimSuffix(ref, suf)
				}
			}
			if !names[base] {
				t.Errorf("%s uses %s, which the exporter does not register", where, ref)
			}
		}
	}
}

// TestAlertsFireWithoutSeries: Prometheus answers an aggregation over
// series that do not exist yet with no sample at all, not 0, so an alert
// asking for a rate "== 0" never fires on a replica that has not issued
// once since it started (a broken rollout) unless it falls back to
// vector(0).
func TestAlertsFireWithoutSeries(t *testing.T) {
	eqZero := regexp.MustCompile(`\)\s*==\s*0\b`)
	for _, g := range at(manifests(t)["PrometheusRule"][0], "spec", "groups").([]any) {
		for _, r := range at(g, "rules").([]any) {
			expr := at(r, "expr").(string)
			if eqZero.MatchString(expr) && !strings.Contains(expr, "or vector(0)") {
				t.Errorf("alert %s compares to == 0 without `or vector(0)`: it never fires while the series is absent:\n%s", at(r, "alert"), expr)
			}
		}
	}
}

// registeredLabels returns the variable label names of every metric
// family metrics.New registers.
func registeredLabels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	m := metrics.New("test")
	out := map[string]map[string]bool{}
	desc := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		if !v.Type().Field(i).IsExported() {
			continue
		}
		c, ok := v.Field(i).Interface().(prometheus.Collector)
		if !ok || v.Field(i).Type() == reflect.TypeOf(m.Registry) {
			continue
		}
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			mm := desc.FindStringSubmatch(d.String())
			if mm == nil {
				continue
			}
			labels := map[string]bool{}
			for _, l := range strings.Split(mm[2], ",") {
				if l = strings.TrimSpace(l); l != "" {
					labels[l] = true
				}
			}
			out[mm[1]] = labels
		}
	}
	if len(out["dispenser_issuances_total"]) != 5 {
		t.Fatalf("label walk found too little: %v", out["dispenser_issuances_total"])
	}
	return out
}

var (
	selectorRef = regexp.MustCompile(`\b(dispenser_[a-z0-9_]+)\{([^}]*)\}`)
	matcherRef  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"([^"]*)"`)
	byRef       = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)\s*\(`)
)

// metricBase strips the series suffixes of a histogram.
func metricBase(ref string, names map[string]map[string]bool) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if b := strings.TrimSuffix(ref, suf); b != ref && names[b] != nil {
			return b
		}
	}
	return ref
}

// checkLabels checks that every label an expression selects on or
// aggregates by is one the metrics it names carry (le only on histogram
// buckets), and that route matchers name a real route.
func checkLabels(t *testing.T, where string, exprs []string, labels map[string]map[string]bool, routes map[string]bool) {
	t.Helper()
	for _, e := range exprs {
		for _, sel := range selectorRef.FindAllStringSubmatch(e, -1) {
			base := metricBase(sel[1], labels)
			for _, m := range matcherRef.FindAllStringSubmatch(sel[2], -1) {
				if !labels[base][m[1]] {
					t.Errorf("%s: %s has no label %q (it has %v): %s", where, sel[1], m[1], labels[base], e)
				}
				if m[1] == "route" && !routes[m[2]] {
					t.Errorf("%s: route=%q is not a route the server serves: %s", where, m[2], e)
				}
			}
		}
		for _, loc := range byRef.FindAllStringSubmatchIndex(e, -1) {
			// The aggregated expression is the parenthesised group after by (...).
			open, depth, end := loc[1]-1, 0, len(e)
			for i := open; i < len(e); i++ {
				if e[i] == '(' {
					depth++
				} else if e[i] == ')' {
					if depth--; depth == 0 {
						end = i
						break
					}
				}
			}
			inner := e[open:end]
			for _, l := range strings.Split(e[loc[2]:loc[3]], ",") {
				l = strings.TrimSpace(l)
				for _, ref := range metricRef.FindAllString(inner, -1) {
					base := metricBase(ref, labels)
					if l == "le" && strings.HasSuffix(ref, "_bucket") {
						continue
					}
					if !labels[base][l] {
						t.Errorf("%s: aggregates %s by %q, a label it does not have (%v): %s", where, ref, l, labels[base], e)
					}
				}
			}
		}
	}
}

func TestAlertAndDashboardMetricsExist(t *testing.T) {
	names := registered(t)
	var exprs []string
	for _, g := range at(manifests(t)["PrometheusRule"][0], "spec", "groups").([]any) {
		for _, r := range at(g, "rules").([]any) {
			exprs = append(exprs, at(r, "expr").(string))
		}
	}
	checkNames(t, "prometheusrule.yaml", exprs, names)
	labels := registeredLabels(t)
	routes := map[string]bool{}
	for _, r := range api.New(api.Options{}).Routes() {
		routes[r[1]] = true
	}
	if !routes["/credentials"] {
		t.Fatalf("route walk found too little: %v", routes)
	}
	checkLabels(t, "prometheusrule.yaml", exprs, labels, routes)

	b, err := os.ReadFile("grafana/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	exprs = nil
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	checkNames(t, "dashboard.json", exprs, names)
	checkLabels(t, "dashboard.json", exprs, labels, routes)
	// Every dispenser metric is on the dashboard.
	used := map[string]bool{}
	for _, e := range exprs {
		for _, ref := range metricRef.FindAllString(e, -1) {
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(ref, "_bucket"), "_sum"), "_count")] = true
		}
	}
	var missing []string
	for n := range names {
		if strings.HasPrefix(n, "dispenser_") && !used[n] {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics not on the dashboard: %v", missing)
	}
}

// TestDashboardPanelsShowWhatTheySay: a panel titled with quantiles plots
// each of them, and the certificate panel leaves out replicas without TLS
// (their expiry gauge is 0, which would chart as -20,000 days).
func TestDashboardPanelsShowWhatTheySay(t *testing.T) {
	b, err := os.ReadFile("grafana/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr, LegendFormat string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	quantile := regexp.MustCompile(`\bp(\d+)\b`)
	histQuantile := regexp.MustCompile(`histogram_quantile\((0\.\d+)\s*,`)
	tlsExpiry := regexp.MustCompile(`dispenser_tls_cert_expiry_timestamp_seconds\s*(>\s*0)?`)
	for _, p := range dash.Panels {
		qs := quantile.FindAllStringSubmatch(p.Title, -1)
		legends := map[string]bool{}
		for _, q := range qs {
			found := false
			for _, tg := range p.Targets {
				for _, hq := range histQuantile.FindAllStringSubmatch(tg.Expr, -1) {
					if strings.TrimRight(strings.TrimPrefix(hq[1], "0."), "0") == strings.TrimRight(q[1], "0") {
						found = true
						legends[tg.LegendFormat] = true
					}
				}
			}
			if !found {
				t.Errorf("panel %q names p%s but no target plots histogram_quantile(0.%s, ...)", p.Title, q[1], q[1])
			}
		}
		if len(qs) > 1 && len(legends) < len(qs) {
			t.Errorf("panel %q: the quantiles' series share a legend and cannot be told apart", p.Title)
		}
		for _, tg := range p.Targets {
			for _, m := range tlsExpiry.FindAllStringSubmatch(tg.Expr, -1) {
				if m[1] == "" {
					t.Errorf("panel %q charts the certificate expiry of replicas without TLS (gauge 0): %s", p.Title, tg.Expr)
				}
			}
		}
	}
}

// TestStaticBinary builds the binary as the Dockerfile does (or takes the
// one .ci/run built, DISPENSER_STATIC_BINARY), checks it is statically
// linked and runs it as an unprivileged user.
func TestStaticBinary(t *testing.T) {
	bin := os.Getenv("DISPENSER_STATIC_BINARY")
	if bin == "" {
		// Building with -trimpath recompiles everything (minutes on a busy
		// machine): .ci/run builds it once and passes it in.
		if !testenv.InCI() {
			t.Skip("set DISPENSER_STATIC_BINARY (scripts/build-static.sh output) or CI=true to test the static binary")
		}
		bin = filepath.Join(t.TempDir(), "dispenser")
		cmd := exec.Command("../scripts/build-static.sh", bin)
		cmd.Env = append(os.Environ(), "VERSION=static-test")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has a PT_INTERP program header: dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Fatalf("binary needs shared libraries %v", libs)
	}
	if f.Section(".dynamic") != nil {
		t.Fatal("binary has a .dynamic section")
	}
	if f.Section(".symtab") != nil {
		t.Error("binary is not stripped (-s -w)")
	}

	if os.Geteuid() != 0 {
		if testenv.InCI() {
			t.Fatal("CI must run as root to test the unprivileged run (setpriv)")
		}
		t.Skip("not root: cannot switch to an unprivileged user")
	}
	// The unprivileged user must be able to read and execute it.
	dir, err := os.MkdirTemp("", "dispenser-static-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "dispenser")
	if err := os.WriteFile(run, b, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", run, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("unprivileged run: %v\n%s", err, out)
	}
	if v := strings.TrimSpace(string(out)); v == "" || v == "dev" && os.Getenv("DISPENSER_STATIC_BINARY") == "" {
		t.Fatalf("version = %q: the -X main.version stamp is missing", v)
	}
	id, _ := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "id", "-u").Output()
	if strings.TrimSpace(string(id)) != "65534" {
		t.Fatalf("setpriv ran as uid %q", id)
	}
}

// TestShippedConfigsValidate runs the dispenser's own configuration
// validation over every configuration the deploy files ship, so a manifest
// cannot drift into a config `serve` refuses. Files they reference live in
// the container (mounted secrets, certificates), so a missing file is the
// only problem tolerated here.
func TestShippedConfigsValidate(t *testing.T) {
	k := manifests(t)
	compose, err := os.ReadFile("compose.dispenser.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"kubernetes/configmap.yaml": at(k["ConfigMap"][0], "data", "dispenser.yaml").(string),
		"compose.dispenser.yaml":    string(compose),
	} {
		// Environment-variable secrets the configs name.
		t.Setenv("DISPENSER_ADMIN_TOKEN", strings.Repeat("x", 40))
		t.Setenv("DISPENSER_REDIS_PASSWORD", "x")
		_, err := config.Parse([]byte(text))
		var ve *validate.Error
		if err != nil && !errors.As(err, &ve) {
			t.Fatalf("%s: %v", name, err)
		}
		if ve == nil {
			continue
		}
		for _, p := range ve.Problems {
			if strings.Contains(p.Message, "no such file or directory") {
				continue
			}
			t.Errorf("%s: %s", name, p)
		}
	}
}
