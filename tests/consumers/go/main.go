// Command consumer reads spiffe-bridge's outputs through unmodified Go SDKs, configured
// only through their documented environment variables and files, and reports what it
// got as JSON lines on stdout. It never prints a secret: only fingerprints
// (sha256 hex of access key id + session token, or of the access token).
//
// Modes:
//
//	aws            aws-sdk-go-v2 config.LoadDefaultConfig; the environment picks the source
//	               (shared credentials file, credential_process, container endpoint, IMDSv2).
//	               Each round: Credentials.Retrieve, then sts GetCallerIdentity at -sts.
//	gce-metadata   cloud.google.com/go/compute/metadata: OnGCE, Email, ProjectID, then the
//	               token path each round (this package does not cache).
//	gcp-default    golang.org/x/oauth2/google FindDefaultCredentials (GCE metadata when
//	               GCE_METADATA_HOST is set, or GOOGLE_APPLICATION_CREDENTIALS).
//	gcp-json       google.CredentialsFromJSON on -file (the external_account config).
//	gcp-token-file json.Unmarshal of -file (gcp/<t>.json) into an oauth2.Token, read
//	               afresh each round; Valid() must hold.
//
// GCP modes prove each token with a POST to -check (an IAM generateIdToken URL of the
// dev emulator, which answers 200 only for a valid, unexpired token it issued).
//
// Rounds repeat every -interval until -want distinct credentials were seen (exit 0) or
// -timeout passes (exit 3). Errors are reported and the loop goes on.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"cloud.google.com/go/compute/metadata"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

const cloudPlatform = "https://www.googleapis.com/auth/cloud-platform"

var (
	mode     = flag.String("mode", "aws", "aws | gce-metadata | gcp-default | gcp-json | gcp-token-file")
	stsURL   = flag.String("sts", "", "STS endpoint for GetCallerIdentity (aws mode)")
	checkURL = flag.String("check", "", "URL that validates a Google access token (POST, Bearer)")
	file     = flag.String("file", "", "credentials JSON (gcp-json, gcp-token-file modes)")
	want     = flag.Int("want", 1, "stop after this many distinct credentials")
	timeout  = flag.Duration("timeout", 30*time.Second, "give up after this long")
	interval = flag.Duration("interval", 500*time.Millisecond, "pause between rounds")
	reload   = flag.Bool("reload", false, "aws: LoadDefaultConfig again every round (a new process each time)")
)

func emit(fields map[string]any) {
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func fingerprint(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "")))
	return hex.EncodeToString(sum[:])
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

type round func(ctx context.Context) (fp string, fields map[string]any)

func loop(ctx context.Context, next round) int {
	deadline := time.Now().Add(*timeout)
	seen := map[string]bool{}
	for {
		fp, fields := next(ctx)
		fields["t"] = stamp(time.Now())
		emit(fields)
		if fp != "" && !seen[fp] {
			seen[fp] = true
			if len(seen) >= *want {
				emit(map[string]any{"event": "done", "distinct": len(seen)})
				return 0
			}
		}
		if time.Now().After(deadline) {
			emit(map[string]any{"event": "timeout", "distinct": len(seen)})
			return 3
		}
		time.Sleep(*interval)
	}
}

func environment() []string {
	var names []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "AWS_") || strings.HasPrefix(name, "GCE_") ||
			strings.HasPrefix(name, "GOOGLE_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func runAWS(ctx context.Context) int {
	load := func() (aws.Config, error) {
		return config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
	}
	cfg, err := load()
	if err != nil {
		emit(map[string]any{"event": "error", "stage": "load", "error": err.Error()})
		return 2
	}
	return loop(ctx, func(ctx context.Context) (string, map[string]any) {
		if *reload {
			if cfg, err = load(); err != nil {
				return "", map[string]any{"event": "error", "stage": "load", "error": err.Error()}
			}
		}
		creds, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return "", map[string]any{"event": "error", "stage": "retrieve", "error": err.Error()}
		}
		fp := fingerprint(creds.AccessKeyID, creds.SessionToken)
		fields := map[string]any{"event": "credential", "fp": fp, "source": creds.Source,
			"can_expire": creds.CanExpire, "expires": stamp(creds.Expires)}
		client := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(*stsURL) })
		out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			fields["call"] = "error"
			fields["error"] = err.Error()
		} else {
			fields["call"] = "ok"
			fields["arn"] = aws.ToString(out.Arn)
			// The cache is monotone: the same fingerprint after the call means the call
			// was signed with it.
			if after, err := cfg.Credentials.Retrieve(ctx); err == nil {
				fields["same_after_call"] = fingerprint(after.AccessKeyID, after.SessionToken) == fp
			}
		}
		return fp, fields
	})
}

// check proves a Google access token: the emulator's generateIdToken answers 200 only
// for a token it issued that is unexpired and carries cloud-platform.
func check(ctx context.Context, tok *oauth2.Token, fields map[string]any) {
	if *checkURL == "" {
		return
	}
	client := oauth2.NewClient(ctx, oauth2.StaticTokenSource(tok))
	resp, err := client.Post(*checkURL, "application/json",
		bytes.NewReader([]byte(`{"audience":"spiffe-bridge-consumer-check"}`)))
	if err != nil {
		fields["call"] = "error"
		fields["error"] = err.Error()
		return
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	fields["call_status"] = resp.StatusCode
	if resp.StatusCode == http.StatusOK {
		fields["call"] = "ok"
	} else {
		fields["call"] = "error"
	}
}

func runTokenSource(ctx context.Context, ts oauth2.TokenSource, extra map[string]any) int {
	return loop(ctx, func(ctx context.Context) (string, map[string]any) {
		tok, err := ts.Token()
		if err != nil {
			return "", map[string]any{"event": "error", "stage": "token", "error": err.Error()}
		}
		fp := fingerprint(tok.AccessToken)
		fields := map[string]any{"event": "credential", "fp": fp, "expires": stamp(tok.Expiry),
			"token_type": tok.Type()}
		for k, v := range extra {
			fields[k] = v
		}
		check(ctx, tok, fields)
		return fp, fields
	})
}

func runGceMetadata(ctx context.Context) int {
	on := metadata.OnGCE()
	email, emailErr := metadata.EmailWithContext(ctx, "default")
	project, projectErr := metadata.ProjectIDWithContext(ctx)
	emit(map[string]any{"event": "metadata", "on_gce": on, "email": email,
		"email_error": errText(emailErr), "project_id": project, "project_error": errText(projectErr)})
	return loop(ctx, func(ctx context.Context) (string, map[string]any) {
		body, err := metadata.GetWithContext(ctx, "instance/service-accounts/default/token")
		if err != nil {
			return "", map[string]any{"event": "error", "stage": "token", "error": err.Error()}
		}
		var doc struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int64  `json:"expires_in"`
			TokenType   string `json:"token_type"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil || doc.AccessToken == "" {
			return "", map[string]any{"event": "error", "stage": "parse", "error": errText(errors.Join(err, errors.New("no access_token")))}
		}
		tok := &oauth2.Token{AccessToken: doc.AccessToken, TokenType: doc.TokenType,
			Expiry: time.Now().Add(time.Duration(doc.ExpiresIn) * time.Second)}
		fields := map[string]any{"event": "credential", "fp": fingerprint(doc.AccessToken),
			"expires": stamp(tok.Expiry), "expires_in": doc.ExpiresIn, "token_type": doc.TokenType}
		check(ctx, tok, fields)
		return fingerprint(doc.AccessToken), fields
	})
}

// runTokenFile loads the bridge's gcp/<t>.json as Go's own OAuth2 token type, the way a
// program holding a token file does: no adapter, only encoding/json and oauth2.Token.
func runTokenFile(ctx context.Context) int {
	return loop(ctx, func(ctx context.Context) (string, map[string]any) {
		data, err := os.ReadFile(*file)
		if err != nil {
			return "", map[string]any{"event": "error", "stage": "read", "error": err.Error()}
		}
		var tok oauth2.Token
		if err := json.Unmarshal(data, &tok); err != nil {
			return "", map[string]any{"event": "error", "stage": "parse", "error": err.Error()}
		}
		if !tok.Valid() {
			return "", map[string]any{"event": "error", "stage": "valid",
				"error": "oauth2.Token not Valid()", "expires": stamp(tok.Expiry)}
		}
		fp := fingerprint(tok.AccessToken)
		fields := map[string]any{"event": "credential", "fp": fp, "expires": stamp(tok.Expiry),
			"token_type": tok.Type()}
		check(ctx, &tok, fields)
		return fp, fields
	})
}

func main() {
	flag.Parse()
	ctx := context.Background()
	emit(map[string]any{"event": "start", "mode": *mode, "env": environment()})
	switch *mode {
	case "aws":
		os.Exit(runAWS(ctx))
	case "gce-metadata":
		os.Exit(runGceMetadata(ctx))
	case "gcp-default":
		creds, err := google.FindDefaultCredentials(ctx, cloudPlatform)
		if err != nil {
			emit(map[string]any{"event": "error", "stage": "find", "error": err.Error()})
			os.Exit(2)
		}
		os.Exit(runTokenSource(ctx, creds.TokenSource, map[string]any{"project_id": creds.ProjectID}))
	case "gcp-json":
		data, err := os.ReadFile(*file)
		if err != nil {
			emit(map[string]any{"event": "error", "stage": "read", "error": err.Error()})
			os.Exit(2)
		}
		creds, err := google.CredentialsFromJSON(ctx, data, cloudPlatform) //nolint:staticcheck // the API under test
		if err != nil {
			emit(map[string]any{"event": "error", "stage": "parse", "error": err.Error()})
			os.Exit(2)
		}
		os.Exit(runTokenSource(ctx, creds.TokenSource, map[string]any{"project_id": creds.ProjectID}))
	case "gcp-token-file":
		os.Exit(runTokenFile(ctx))
	default:
		emit(map[string]any{"event": "error", "stage": "usage", "error": "unknown -mode " + *mode})
		os.Exit(2)
	}
}
