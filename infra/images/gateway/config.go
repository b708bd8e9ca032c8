package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// config is what docs/remote-nodes.md ("The gateway's configuration") lists, read once at start.
type config struct {
	listen          string
	tlsCert, tlsKey string
	clientCA        string
	temporalAddress string
	namespace       string
	apiURL          string
	apiSecret       string
	keys            *tokenKeys
	nodeRPS         float64
	nodeBurst       int
	nodeMaxPolls    int
}

// loadConfig reads the environment and the files it names; every problem is listed, not only the first.
func loadConfig(getenv func(string) string) (*config, error) {
	var problems []string
	required := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			problems = append(problems, name+" is not set")
		}
		return v
	}
	number := func(name string, def float64, min float64) float64 {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < min {
			problems = append(problems, fmt.Sprintf("%s=%q is not a number >= %g", name, v, min))
			return def
		}
		return n
	}
	c := &config{
		listen:          required("GATEWAY_LISTEN"),
		tlsCert:         required("GATEWAY_TLS_CERT"),
		tlsKey:          required("GATEWAY_TLS_KEY"),
		clientCA:        required("GATEWAY_CLIENT_CA"),
		temporalAddress: required("GATEWAY_TEMPORAL_ADDRESS"),
		namespace:       strings.TrimSpace(getenv("GATEWAY_TEMPORAL_NAMESPACE")),
		apiURL:          strings.TrimRight(required("GATEWAY_API_URL"), "/"),
		nodeRPS:         number("GATEWAY_NODE_RPS", 20, 0.001),
		nodeBurst:       int(number("GATEWAY_NODE_BURST", 100, 1)),
		nodeMaxPolls:    int(number("GATEWAY_NODE_MAX_POLLS", 32, 1)),
	}
	if c.namespace == "" {
		c.namespace = "default"
	}
	if file := required("GATEWAY_API_SECRET_FILE"); file != "" {
		b, err := os.ReadFile(file)
		c.apiSecret = strings.TrimSpace(string(b))
		if err != nil {
			problems = append(problems, "GATEWAY_API_SECRET_FILE: "+err.Error())
		} else if c.apiSecret == "" {
			problems = append(problems, "GATEWAY_API_SECRET_FILE is empty")
		}
	}
	if file := required("GATEWAY_TOKEN_KEYS_FILE"); file != "" {
		keys, err := loadTokenKeys(file)
		if err != nil {
			problems = append(problems, "GATEWAY_TOKEN_KEYS_FILE: "+err.Error())
		}
		c.keys = keys
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return c, nil
}
