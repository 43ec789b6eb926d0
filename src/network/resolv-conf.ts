/** A machine's resolver: its app's gateway answers `.internal` names; short ids resolve too. */
export function resolvConf(app: string, gateway: string): string {
  return `nameserver ${gateway}\nsearch vm.${app}.internal ${app}.internal\n`;
}
