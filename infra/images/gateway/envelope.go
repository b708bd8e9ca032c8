package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// A Temporal task token is a plain, unsigned proto: whoever knows a workflow id and an activity id can make one
// that completes that activity (docs/remote-nodes.md; gateway.test.ts shows the forgery). So a node only ever sees tokens
// wrapped in an envelope the gateway signed for it, and only an envelope signed for the calling node is
// unwrapped on the way back. The envelope is stateless, so it survives restarts and works across replicas:
//
//	version (1) | keyId (1) | expiry (8, unix seconds, big endian) | raw token | HMAC-SHA256(key, nodeId | 0x00 | version | keyId | expiry | raw)
//
// The version byte is 0x01, so an envelope never starts with "local_act_", the prefix sdk-core gives its own
// local-activity tokens.
const (
	envelopeVersion  = 0x01
	envelopeHeader   = 1 + 1 + 8
	envelopeMAC      = sha256.Size
	maxEnvelopeBytes = 8 << 10 // a server token is a few hundred bytes; anything near this is not one
	// executeRun can run for hours: a token outlives its attempt's own timeout by this much.
	envelopeSlack = time.Hour
	// A task with neither start-to-close nor schedule-to-close timeout (the server sets one; this is a floor).
	envelopeDefaultLifetime = 7 * 24 * time.Hour
)

var (
	errTokenMalformed  = errors.New("task token is not a gateway envelope")
	errTokenTooLarge   = errors.New("task token is too large")
	errTokenKeyUnknown = errors.New("task token is signed with an unknown or retired key")
	errTokenForged     = errors.New("task token was not issued to this node")
	errTokenExpired    = errors.New("task token has expired")
)

// tokenKeys are the keys of GATEWAY_TOKEN_KEYS_FILE: the first signs, the second (the one before a rotation)
// is still accepted, any other id is refused.
type tokenKeys struct {
	signID byte
	byID   map[byte][]byte
}

func loadTokenKeys(file string) (*tokenKeys, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return parseTokenKeys(string(b))
}

func parseTokenKeys(text string) (*tokenKeys, error) {
	keys := &tokenKeys{byID: map[byte][]byte{}}
	n := 0
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want '<id 1..255> <base64 of 32 bytes>'", i+1)
		}
		id, err := strconv.Atoi(fields[0])
		if err != nil || id < 1 || id > 255 {
			return nil, fmt.Errorf("line %d: key id %q is not 1..255", i+1, fields[0])
		}
		key, err := base64.StdEncoding.DecodeString(fields[1])
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("line %d: the key is not base64 of 32 bytes", i+1)
		}
		if _, dup := keys.byID[byte(id)]; dup {
			return nil, fmt.Errorf("line %d: key id %d is there twice", i+1, id)
		}
		if n == 0 {
			keys.signID = byte(id)
		}
		keys.byID[byte(id)] = key
		n++
	}
	switch {
	case n == 0:
		return nil, errors.New("no key")
	case n > 2:
		// A third key would never be used: only the signing key and the one before it are accepted.
		return nil, errors.New("more than two keys (the first signs, the second is still accepted)")
	}
	return keys, nil
}

func envelopeMACOf(key []byte, nodeID string, header, raw []byte) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(nodeID))
	mac.Write([]byte{0})
	mac.Write(header)
	mac.Write(raw)
	return mac.Sum(nil)
}

// wrap seals a raw token from the server for nodeID, valid until expiry.
func (k *tokenKeys) wrap(nodeID string, raw []byte, expiry time.Time) []byte {
	out := make([]byte, envelopeHeader, envelopeHeader+len(raw)+envelopeMAC)
	out[0] = envelopeVersion
	out[1] = k.signID
	binary.BigEndian.PutUint64(out[2:envelopeHeader], uint64(expiry.Unix()))
	out = append(out, raw...)
	return append(out, envelopeMACOf(k.byID[k.signID], nodeID, out[:envelopeHeader], raw)...)
}

// unwrap returns the raw token of an envelope sealed for nodeID, or why it is refused.
func (k *tokenKeys) unwrap(nodeID string, token []byte, now time.Time) ([]byte, error) {
	if len(token) > maxEnvelopeBytes {
		return nil, errTokenTooLarge
	}
	if len(token) <= envelopeHeader+envelopeMAC || token[0] != envelopeVersion {
		return nil, errTokenMalformed
	}
	key, ok := k.byID[token[1]]
	if !ok {
		return nil, errTokenKeyUnknown
	}
	header, raw, sum := token[:envelopeHeader], token[envelopeHeader:len(token)-envelopeMAC], token[len(token)-envelopeMAC:]
	if !hmac.Equal(sum, envelopeMACOf(key, nodeID, header, raw)) {
		return nil, errTokenForged
	}
	// Checked only once the MAC holds: the expiry is then the gateway's own.
	if now.Unix() > int64(binary.BigEndian.Uint64(header[2:])) {
		return nil, errTokenExpired
	}
	return bytes.Clone(raw), nil
}
