// Package flagenv lets every flag of a Sidelane binary also be set from the environment:
// flag --some-flag of binary "agent" reads SIDELANE_AGENT_SOME_FLAG. The environment sets the
// default, the command line wins. It is the one flag binder of the binaries (agent, injector,
// proxy).
package flagenv

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// Name is the environment variable of flag name for binary: SIDELANE_<BINARY>_<FLAG>, upper
// case, '-' and '.' as '_'.
func Name(binary, name string) string {
	r := strings.NewReplacer("-", "_", ".", "_")
	return "SIDELANE_" + strings.ToUpper(r.Replace(binary)) + "_" + strings.ToUpper(r.Replace(name))
}

// Bind sets every flag defined in fs whose environment variable (Name(binary, flag)) is set to
// that value, with the flag's own parser, and appends "(env NAME)" to each flag's usage. Call
// it after defining the flags and before fs.Parse. A value the flag refuses is an error that
// names the variable and the value.
func Bind(fs *flag.FlagSet, binary string) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := Name(binary, f.Name)
		f.Usage += " (env " + env + ")"
		v, ok := os.LookupEnv(env)
		if !ok || err != nil {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment %s=%q: %w", env, v, e)
		}
	})
	return err
}
