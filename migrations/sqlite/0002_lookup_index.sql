-- Look-ups by userName / group displayName bind resource_type as a parameter, which the
-- partial unique index (WHERE resource_type = 'User') cannot serve; this one can.
CREATE INDEX scim_resources_name ON scim_resources (integration_id, resource_type, name_key);
