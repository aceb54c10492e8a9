-- create_sale: schedule a new sale, its metadata and its stock in one step.
-- KEYS[1] fs:{sale}:sale   hash: the sale's fields
-- KEYS[2] fs:{sale}:stock  string: units remaining
-- ARGV[1] stock_total
-- ARGV[2..] field, value pairs of the sale
-- The sale starts at version 1; every merchant change bumps it.
-- Returns 1 when created, 0 when the id already exists.
if create_sale_record(KEYS[1], KEYS[2], ARGV[1], {unpack(ARGV, 2)}) then
  return 1
end
return 0
