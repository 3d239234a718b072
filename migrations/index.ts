import { Migration20261126000000_initial } from "./Migration20261126000000_initial.js";
import { Migration20261126010000_admins } from "./Migration20261126010000_admins.js";
import { Migration20261127000000_row_binding } from "./Migration20261127000000_row_binding.js";
import { Migration20261127010000_key_health } from "./Migration20261127010000_key_health.js";

// Every migration, in order. Listed explicitly so that the migrator needs no
// file-system discovery (which cannot import .ts files under some loaders).
export const migrationsList = [
  { name: "Migration20261126000000_initial", class: Migration20261126000000_initial },
  { name: "Migration20261126010000_admins", class: Migration20261126010000_admins },
  { name: "Migration20261127000000_row_binding", class: Migration20261127000000_row_binding },
  { name: "Migration20261127010000_key_health", class: Migration20261127010000_key_health },
];
