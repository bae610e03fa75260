/* A test-only proxy-wasm filter (tests/integration/xds/test_xds_wasm_failure_policy.py):
 * it traps (`unreachable`: a wasm runtime error, which fails the VM) in
 * proxy_on_request_headers when the request carries `x-caravan-trap: 1`, and lets every
 * other request continue. Built by caravan.wasm.build, like Caravan's filters, against
 * their shared proxy_wasm.h (which supplies the allocator and proxy_on_vm_start).
 */
#include "proxy_wasm.h"

int32_t WASM_EXPORT(proxy_on_request_headers)(uint32_t id, uint32_t headers, uint32_t eos) {
  static const char name[] = "x-caravan-trap";
  char *value = NULL;
  size_t n = 0;
  int trap = proxy_get_header_map_value(MAP_REQUEST_HEADERS, name, sizeof name - 1, &value, &n) == OK &&
             n == 1 && value[0] == '1';
  free(value);
  if (trap) __builtin_trap();
  return CONTINUE;
}
