# The fleet's reasons: every `deny` and `approval` of the packages directly under data.arm.ext.
#
# This is the general form, for any tool that loads these files as they are (`opa test`,
# `opa eval`). ARM's engines and bundles load the same rules with the fleet's packages named
# one by one (reconciler/policy/library.py): enumerating data.arm.ext makes the engine build
# each package whole, every rule of it, on every decision.
package arm.decision

import rego.v1

deny_reasons contains msg if some msg in data.arm.ext[_].deny

approval_reasons contains msg if some msg in data.arm.ext[_].approval
