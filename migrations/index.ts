import { Migration20261126000000_initial } from "./Migration20261126000000_initial.js";
import { Migration20261126010000_admins } from "./Migration20261126010000_admins.js";
import { Migration20261127000000_row_binding } from "./Migration20261127000000_row_binding.js";
import { Migration20261127010000_key_health } from "./Migration20261127010000_key_health.js";
import { Migration20261206000000_sign_in_attempts } from "./Migration20261206000000_sign_in_attempts.js";
import { Migration20261206120000_credential_name_key } from "./Migration20261206120000_credential_name_key.js";
import { Migration20261206140000_metrics_scope } from "./Migration20261206140000_metrics_scope.js";
import { Migration20261206150000_token_limits } from "./Migration20261206150000_token_limits.js";
import { Migration20261206160000_admin_roles } from "./Migration20261206160000_admin_roles.js";
import { Migration20261206170000_two_factor } from "./Migration20261206170000_two_factor.js";
import { Migration20261206181000_session_authentication } from "./Migration20261206181000_session_authentication.js";
import { Migration20261206200000_credential_deactivate_at } from "./Migration20261206200000_credential_deactivate_at.js";
import { Migration20261206210000_fleet_search } from "./Migration20261206210000_fleet_search.js";

// Every migration, in order. Listed explicitly so that the migrator needs no
// file-system discovery (which cannot import .ts files under some loaders).
export const migrationsList = [
  { name: "Migration20261126000000_initial", class: Migration20261126000000_initial },
  { name: "Migration20261126010000_admins", class: Migration20261126010000_admins },
  { name: "Migration20261127000000_row_binding", class: Migration20261127000000_row_binding },
  { name: "Migration20261127010000_key_health", class: Migration20261127010000_key_health },
  { name: "Migration20261206000000_sign_in_attempts", class: Migration20261206000000_sign_in_attempts },
  { name: "Migration20261206120000_credential_name_key", class: Migration20261206120000_credential_name_key },
  { name: "Migration20261206140000_metrics_scope", class: Migration20261206140000_metrics_scope },
  { name: "Migration20261206150000_token_limits", class: Migration20261206150000_token_limits },
  { name: "Migration20261206160000_admin_roles", class: Migration20261206160000_admin_roles },
  { name: "Migration20261206170000_two_factor", class: Migration20261206170000_two_factor },
  { name: "Migration20261206181000_session_authentication", class: Migration20261206181000_session_authentication },
  { name: "Migration20261206200000_credential_deactivate_at", class: Migration20261206200000_credential_deactivate_at },
  { name: "Migration20261206210000_fleet_search", class: Migration20261206210000_fleet_search },
];
